"""Tests of `lepton_jax.sequence`."""
