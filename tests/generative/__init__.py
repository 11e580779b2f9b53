"""Tests of `generative`."""
