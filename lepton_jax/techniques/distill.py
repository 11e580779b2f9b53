"""Knowledge distillation (Hinton, Vinyals & Dean 2015): train a student on a trained teacher's softened outputs.

    teacher = distill.load_teacher(config.teacher, make_model, image_shape, num_classes)   # once, before the step
    loss = distill.loss(logits, distill.teacher_logits(teacher, images), labels, T, alpha).mean()  # in the step

The per-example loss is

    alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(softmax(s), y)

with s the student's logits, t the teacher's, y the label and T the temperature. A temperature above 1 softens
both distributions, so the teacher's small probabilities of the wrong classes (which 2 resembles a 7, ...) carry
weight in the loss. The KL's gradient with respect to s_i is (softmax(s/T)_i - softmax(t/T)_i) / T, which for
large T (logits of zero mean over the K classes) tends to (s_i - t_i) / (K T^2): it shrinks as 1/T^2. Times T^2, the
soft term's gradient is T (softmax(s/T)_i - softmax(t/T)_i), tending to (s_i - t_i) / K, on the scale of the hard
term's whatever T is (Hinton et al. §2), so that changing T does not silently change the balance `alpha` sets.

Hinton et al. (§3, MNIST): a teacher of two hidden layers of 1200 ReLUs (dropout, jittered inputs) made 67 test
errors; a net of two layers of 800 units trained from scratch, unregularised, 146; the same net trained to match the
teacher's soft targets at T = 20, 74. They found the best results with a considerably lower weight on the hard
targets than on the soft ones, and temperatures of 2.5 to 4 best for very small students (30 units a layer).

The keys (each a one-line `UserError` at launch when out of range, `check_config`):

  teacher               the workdir of a finished run of the same trainer and task (same number of classes); its
                        kept parameters (the early-stopping best, else the last; seed 0's) are the teacher. None: off.
  distill_temperature   T > 0 (default 4).
  distill_alpha         the soft term's weight, in [0, 1] (default 0.9: 0.1 on the labels, following the paper's
                        advice to weigh the hard targets much less; T = 4 with 0.9 on the soft term is also the
                        KD baseline of Tian et al.'s (2020) distillation benchmark). 1: soft targets only (no
                        labels needed).

The teacher computes its logits on the student's own batch, after augmentation, inside the jitted step, in
inference mode (no dropout, BatchNorm's running statistics), behind `jax.lax.stop_gradient`: it is a constant of
the student's training and never changes. Its files are only read.
"""

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from flax import struct, traverse_util

from lepton_jax import checkpoint
from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import transfer


def settings(config) -> dict:
    """The distillation keys of `config` (the `distill` group of `lepton_jax.config.TECHNIQUES`; one missing: its
    default), each checked against its declaration."""
    return config_lib.technique_settings(config, "distill")


# ---- The loss -------------------------------------------------------------------------------------------------------


def loss(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> jax.Array:
    """(B,) float32 per-example distillation loss:
    `alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y)` (average it over the batch).

    Computed from log-softmaxes in float32 whatever the logits' type, so that neither confident logits nor bf16 ones
    overflow or lose the small probabilities the soft targets are about.

    Args:
      student_logits: (B, K) float, differentiated.
      teacher_logits: (B, K) float, the soft targets' logits (`teacher_logits`: no gradient flows into them here).
      labels: (B,) ints in [0, K), or None with `alpha` 1 (soft targets only).
      temperature: T > 0.
      alpha: the soft term's weight, in [0, 1].
    """
    if labels is None and alpha != 1:
        raise ValueError(f"distill.loss needs labels for its hard term unless alpha is 1, got alpha={alpha}")
    student = jnp.asarray(student_logits, jnp.float32)
    teacher = jnp.asarray(teacher_logits, jnp.float32)
    log_p_student = jax.nn.log_softmax(student / temperature)  # (B, K)
    log_p_teacher = jax.nn.log_softmax(teacher / temperature)  # (B, K)
    p_teacher = jnp.exp(log_p_teacher)
    # A class the teacher rules out (p = 0, e.g. a -inf logit) adds 0 (0 log 0 = 0), not NaN.
    kl = jnp.sum(jnp.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0), axis=-1)  # (B,)
    soft = (temperature**2) * kl
    if labels is None:
        return soft
    hard = optax.softmax_cross_entropy_with_integer_labels(student, labels)  # (B,) at T = 1
    return alpha * soft + (1.0 - alpha) * hard


def criterion(temperature: float, alpha: float) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """`(student logits, labels, teacher logits) -> ()` the batch's mean `loss`: a trainer's loss with a teacher."""

    def batch_loss(student_logits, labels, teacher_logits):
        return loss(student_logits, teacher_logits, labels, temperature, alpha).mean()

    return batch_loss


# ---- The teacher ----------------------------------------------------------------------------------------------------


class Teacher(struct.PyTreeNode):
    """A trained network, frozen: `apply(variables, images) -> logits` in inference mode, and its variables.

    A pytree (its variables are the leaves, `apply` static), so it may be closed over by a jitted step or passed to it.
    """

    apply: Callable = struct.field(pytree_node=False)
    variables: Any


def teacher_logits(teacher: Teacher, images) -> jax.Array:
    """(B, K) float32 logits of `teacher` on `images` (B, H, W, C), with no gradient to the teacher or the images.

    Call it inside the jitted step on the batch the student sees (after augmentation), outside the differentiated
    loss function or inside it: `stop_gradient` makes the teacher a constant either way."""
    logits = teacher.apply(teacher.variables, images)
    return jax.lax.stop_gradient(jnp.asarray(logits, jnp.float32))


def check_teacher_files(workdir: str) -> None:
    """Reads nothing but the directory listing: `workdir` is a finished run (config.json, results.json and a
    checkpoint); otherwise one `UserError` line naming `config.teacher`."""
    where = f"config.teacher={workdir}"
    if not os.path.exists(workdir):
        raise UserError(f"{where} does not exist; point it at the workdir of a finished run to distil from")
    if not os.path.isdir(workdir):
        raise UserError(f"{where} is not a directory; point it at the workdir of a finished run to distil from")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise UserError(f"{where} holds no config.json, so no run; point it at the workdir of a finished run")
    if not os.path.isfile(os.path.join(workdir, "results.json")):
        raise UserError(
            f"{where} is not a finished run (no results.json): finish training it first (the same command resumes it)"
        )
    if not checkpoint.saved_steps(workdir):
        raise UserError(f"{where} holds no checkpoint to read the teacher from; point it at a finished run")


def check_config(config) -> None:
    """At launch (a config check): the keys in range, and `teacher`, when set, a finished run whose loss can be
    combined with this config's."""
    values = settings(config)
    if values["teacher"] is None:
        return
    check_teacher_files(values["teacher"])
    # The hard term is the plain cross-entropy: a class-weighted or focal loss would be silently replaced.
    for name, off in (("class_weighting", "none"), ("focal_gamma", 0.0)):
        if config.get(name, off) != off:
            raise UserError(
                f"config.teacher and config.{name}={config.get(name)!r} cannot be combined (the distillation loss's "
                f"hard term is the plain cross-entropy); set config.{name}={off!r} or config.teacher=None"
            )


def _read_variables(workdir: str) -> dict:
    """Seed 0's kept variables of the run in `workdir` (`transfer.read_variables`), its errors naming this key."""
    try:
        return transfer.read_variables(workdir)
    except UserError as error:
        raise UserError(str(error).replace(f"config.init_from={workdir}", f"config.teacher={workdir}")) from None


def _shapes(model, image_shape) -> dict:
    """{(collection, module, ..., leaf): shape} of `model`'s variables for images of `image_shape` (no arrays)."""
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)))
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(nn.unbox(boxed)).items()}


def load_teacher(
    workdir: str,
    make_model: Callable[[Any, int], Any],
    image_shape,
    num_classes: int,
    trainer: str | None = None,
) -> Teacher:
    """The frozen teacher in the finished run `workdir`: its network (from its config.json) and kept variables.

    Args:
      workdir: the teacher run's workdir (only read).
      make_model: `(config, num_classes) -> model` of the trainer (the teacher may be a larger network of it: its
        own config describes it); `model.init(key, images)` and `model.apply(variables, images)` (inference mode).
      image_shape: (H, W, C) of the student's images.
      num_classes: the student's number of classes.
      trainer: the student's trainer; when given, the teacher run must be one of it.

    Raises:
      UserError: one line naming `config.teacher`: no such directory, not a finished run, no checkpoint, an
        unreadable config.json or checkpoint, a run of another trainer, a teacher of another number of classes or of
        images of another shape.
    """
    where = f"config.teacher={workdir}"
    check_teacher_files(workdir)
    config = ml_collections.ConfigDict(
        config_lib.read_json(os.path.join(workdir, "config.json"), f"the config of the run {where}")
    )
    if trainer is not None and config.get("trainer") != trainer:
        raise UserError(
            f"{where} is a run of trainer {config.get('trainer')!r}, not of {trainer!r}; distil from a {trainer} run"
        )
    model = make_model(config, num_classes)
    expected = _shapes(model, image_shape)
    # The leaves whose shape follows the number of classes (the head), and on which axis.
    more = _shapes(make_model(config, num_classes + 1), image_shape)
    class_axis = {
        path: next(i for i, (a, b) in enumerate(zip(shape, more[path])) if a != b)
        for path, shape in expected.items()
        if more[path] != shape
    }

    source = traverse_util.flatten_dict(_read_variables(workdir))
    if set(source) != set(expected):
        missing = sorted("/".join(p) for p in set(expected) ^ set(source))[0]
        raise UserError(
            f"{where}: its checkpoint does not hold the network its config.json describes ({missing} is in one of "
            "them only); point it at an intact run"
        )
    wrong = {path: tuple(np.shape(source[path])) for path, shape in expected.items() if np.shape(source[path]) != shape}
    if wrong and set(wrong) <= set(class_axis):
        path = next(iter(wrong))
        classes = wrong[path][class_axis[path]]
        raise UserError(
            f"{where} is a teacher of another task: it predicts {classes} classes, this run {num_classes}; distil from "
            "a run on the same classes"
        )
    if wrong:
        path = sorted(wrong)[0]
        raise UserError(
            f"{where}: {'/'.join(path)} has shape {wrong[path]} there and {expected[path]} here (the network its "
            f"config.json describes, on images of shape {tuple(image_shape)}); distil from an intact run on such "
            "images"
        )
    variables = traverse_util.unflatten_dict({path: jnp.asarray(value) for path, value in source.items()})
    return Teacher(apply=model.apply, variables=variables)
