"""Knowledge graphs: the datasets (`data.py`), filtered ranking (`ranking.py`), and completion by embeddings
(`embedding.py`: DistMult, ComplEx, R-GCN), and
an RL agent that answers queries by walking the graph (`walk.py`, the environment; `walker.py`, MINERVA with reward
shaping)."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {"kg_embedding": "graphs.kg.embedding", "kg_walker": "graphs.kg.walker"}
