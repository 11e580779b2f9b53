"""Agents: one algorithm per file, each built from the shared parts in `lepton_jax.rl`."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {
    "ppo": "agents.ppo",
    "dqn": "agents.dqn",
    "reinforce": "agents.reinforce",
    "a2c": "agents.a2c",
    "nas": "agents.nas.trainer",
    "ippo": "agents.ippo",
    "mappo": "agents.ippo",
    "vdn": "agents.qmix",
    "qmix": "agents.qmix",
}
