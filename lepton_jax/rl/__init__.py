"""RL building blocks shared by every agent: envs, networks, distributions, GAE, the chunked loop."""
