"""Graph learning with jraph (GNNs, graph RL)."""
