"""Knowledge graphs: the datasets (`data.py`), filtered ranking (`ranking.py`), and completion by embeddings
(`embedding.py`: DistMult, ComplEx, R-GCN)."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {"kg_embedding": "graphs.kg.embedding"}
