"""Tests of `graphs`."""
