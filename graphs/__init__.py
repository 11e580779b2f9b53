"""Graph learning with jraph: GNNs for node classification (with GLNN distillation into an MLP), link prediction,
graph classification, and Deep Graph Infomax's unsupervised node embeddings.

Graph RL (environments, structure2vec agents, exact solvers) lives in the subpackage `graphs.rl`.
"""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {
    "node_classification": "graphs.node_classification",
    "link_prediction": "graphs.link_prediction",
    "graph_classification": "graphs.graph_classification",
    "node_link_multitask": "graphs.multitask",
    "dgi": "graphs.dgi",
}
