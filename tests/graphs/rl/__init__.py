"""Tests of `graphs/rl`."""
