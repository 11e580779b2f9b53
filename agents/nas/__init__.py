"""Neural architecture search with a reinforcement-learning controller (Zoph & Le 2017), at CPU scale.

- `space.py`: the CNN search space; an architecture is a fixed-length vector of choices.
- `children.py`: a batch of children of different architectures trained together, as masks of one super-network.
- `controller.py`: the LSTM policy over the decisions and its REINFORCE update with a moving-average baseline.
- `search.py`: the methods at equal child budget: the controller, random search, regularised evolution.
- `trainer.py`: the `nas` trainer on the run scaffold; its config is `agents/configs/nas.py`.
"""

METHODS = ("controller", "random", "evolution")  # the search methods (`search.make_method`)
