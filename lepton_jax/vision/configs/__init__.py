"""Configs of the image classifier."""
