"""Tests of `rl`."""
