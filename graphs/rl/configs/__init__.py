"""Configs of the graph-RL trainers (S2V-DQN, GNN-PPO)."""
