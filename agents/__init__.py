"""Agents: one algorithm per file, each built from the shared parts in `lepton_jax.rl`."""
