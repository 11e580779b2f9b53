"""GNN + RL on graphs: on-device MVC/MaxCut environments (`envs/`), structure2vec policies (`policies.py`), the
S2V-DQN and GNN-PPO trainers built on the project's agents (`trainer.py`), and exact solvers (`solvers/`).

The one part of `graphs/` that imports `agents/`.
"""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {"graph_dqn": "graphs.rl.trainer", "graph_ppo": "graphs.rl.trainer"}
