"""Multi-task learning: one shared trunk, a head per task, and the weighted sum of the tasks' losses.

    model = multitask.MultiHead(trunk, {"left": 10, "right": 10}, method="features")  # apply -> {task: logits}
    weights = multitask.task_weights(config, ("left", "right"))    # {task: weight}, the tasks trained
    total, terms = multitask.weighted_loss({t: loss_fn(logits[t], labels[t]) for t in weights}, weights)

The trunk is any linen module; one of its methods (`method`, called with the inputs and `train=`) gives the shared
features, and each head is a dense layer on them, so the trunk's parameters sit under `trunk` and each head's under
`head_<task>`. The loss is the weighted *sum* `sum_t w_t L_t` (not a mean): the trunk receives `sum_t w_t grad L_t`
and each head only its own task's `w_t grad L_t`. With weights 1 a task's head learns exactly as alone; the trunk
sees the tasks' gradients added, as in Sener & Koltun's "uniform scaling" baseline.

The keys (declared once, in `KEYS` below; a pillar whose trainer honours them spreads `KEYS` into its own table):

  task_weights  "left:1,right:0.5": each task's weight in the loss (finite, >= 0); a task not listed weighs 1, so
                "" weighs every task 1; a weight of 0 keeps the task's head and its metrics but trains nothing
                through it
  single_task   a task's name: build and train that task's head alone (the single-task baseline, from the same
                code and the same trunk); "" trains every task

A malformed value is refused at launch by its `Key`; a task name the trainer does not have, `single_task` together
with `task_weights`, or every weight 0, by `task_weights` before anything is built; each is one `UserError` line.
"""

import math
from collections.abc import Mapping, Sequence

import jax
from flax import linen as nn

from lepton_jax import config as config_lib
from lepton_jax import parallel
from lepton_jax.config import Key, require
from lepton_jax.errors import UserError


def parse_weights(text: str) -> dict[str, float] | None:
    """`"left:1,right:0.5"` -> `{"left": 1.0, "right": 0.5}`, `""` -> `{}`; None when it is not comma-separated
    `task:weight` pairs, each task once, each weight a finite number >= 0."""
    weights = {}
    for part in text.split(",") if text.strip() else ():
        name, colon, value = (s.strip() for s in part.partition(":"))
        if not colon or not name or name in weights:
            return None
        try:
            weight = float(value)
        except ValueError:
            return None
        if not math.isfinite(weight) or weight < 0:
            return None
        weights[name] = weight
    return weights


KEYS = {
    "task_weights": Key(
        "str",
        "comma-separated task:weight pairs such as 'left:1,right:0.5' (each task once, weights finite and >= 0; "
        "a task left out weighs 1; '': every task 1)",
        lambda v: parse_weights(v) is not None,
    ),
    "single_task": Key("str", "one task's name, or '' (every task)", lambda v: v == v.strip() and "," not in v),
}
DEFAULTS = {"task_weights": "", "single_task": ""}  # every task, each weighing 1


def task_weights(config, tasks: Sequence[str]) -> dict[str, float]:
    """`{task: weight}` of the tasks a run trains, in `tasks`' order: `config.single_task` alone (weight 1), else
    every task with its `config.task_weights` weight (1 when not listed).

    Args:
      config: the run's config (a key it lacks is at its default: every task, weight 1).
      tasks: the trainer's task names.

    Raises:
      UserError: one line naming the key and value: malformed, a task the trainer does not have, `single_task`
        with `task_weights`, or every weight 0.
    """
    values = {name: config.get(name, default) for name, default in DEFAULTS.items()}
    for name, value in values.items():
        config_lib.check(name, value, KEYS[name])
    text, single = values["task_weights"], values["single_task"]
    listed = parse_weights(text)
    unknown = [name for name in listed if name not in tasks]
    if unknown:
        raise UserError(
            f"config.task_weights={text!r} names {unknown[0]!r}, not a task of this trainer; its tasks: "
            f"{', '.join(tasks)}"
        )
    if single:
        require(
            single in tasks,
            f"config.single_task={single!r} is not a task of this trainer; its tasks: {', '.join(tasks)} ('' trains "
            "them all)",
        )
        require(
            not listed,
            f"config.single_task={single!r} trains one task alone, so config.task_weights={text!r} would be ignored; "
            "leave one of them empty",
        )
        return {single: 1.0}
    weights = {name: listed.get(name, 1.0) for name in tasks}
    require(
        any(w > 0 for w in weights.values()), f"config.task_weights={text!r} weighs every task 0: nothing would train"
    )
    return weights


def weighted_loss(losses: Mapping[str, jax.Array], weights: Mapping[str, float]) -> tuple[jax.Array, dict]:
    """The total loss `sum_t weights[t] * losses[t]` and its terms `{t: weights[t] * losses[t]}` (they add up to
    the total), summed in `weights`' order.

    Args:
      losses: `{task: loss}`, scalars or arrays of one shape (e.g. one loss per seed).
      weights: `{task: weight}` over the same tasks.

    Raises:
      ValueError: the two name different tasks (a task without a weight, or a weight without a loss).
    """
    if set(losses) != set(weights):
        raise ValueError(f"losses of tasks {sorted(losses)} but weights of tasks {sorted(weights)}")
    terms = {task: weight * losses[task] for task, weight in weights.items()}
    return sum(terms.values()), terms


class MultiHead(nn.Module):
    """A shared trunk and one dense head per task: `apply(variables, *inputs, train=...) -> {task: outputs}`.

    Attributes:
      trunk: the shared network (its parameters under `trunk`).
      heads: `{task: number of outputs}` (e.g. classes); each head is `head_<task>`, in this order.
      method: the trunk's method that gives the shared features `(..., F)` from the inputs and `train=`
        (`"features"` for the image classifier's CNN, whose `__call__` has its own head).
      dropout: dropout on the features before the heads while training (as the classifier's CNN before its head).
      head_split: how each head's kernel is split over the mesh's `model` axis (`lepton_jax.parallel.dense`): "row"
        after a trunk whose last layer is column-split (the CNN's dense layer), else "".
    """

    trunk: nn.Module
    heads: Mapping[str, int]
    method: str = "__call__"
    dropout: float = 0.0
    head_split: str = ""

    @nn.compact
    def __call__(self, *inputs, train: bool = False) -> dict:
        features = getattr(self.trunk, self.method)(*inputs, train=train)
        if self.dropout:
            features = nn.Dropout(self.dropout)(features, deterministic=not train)
        return {
            task: parallel.dense(outputs, self.head_split, name=f"head_{task}")(features)
            for task, outputs in self.heads.items()
        }
