"""Configs for the agents; each returns an `ml_collections.ConfigDict` from `get_config(arg)`."""
