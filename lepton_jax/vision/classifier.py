"""A small CNN image classifier (the Flax MNIST example's network), trainable through the launcher.

    python -m scripts.train --config=lepton_jax/vision/configs/classifier.py:mnist  # runs/classifier-mnist-<hash8>

Conv(32, 3x3)-ReLU-AvgPool, Conv(64, 3x3)-ReLU-AvgPool, Dense(256)-ReLU, Dense(classes); Adam, cross-entropy. Its
penultimate layer (the 256 ReLU features) is the feature space of the generative models' FID/KID: a finished run is
reused from its workdir (`lepton_jax/vision/trained.py`). `fit_images` is the run skeleton the image trainers share.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax import epochs, metrics, parallel, placement, plotting, registry, seeds, supervised
from lepton_jax import run as run_lib
from lepton_jax.config import require, technique_settings
from lepton_jax.techniques import (
    augment,
    distill,
    early_stopping,
    imbalance,
    optim,
    precision,
    prune,
    quantize,
    transfer,
)
from lepton_jax.vision import data as image_data

EVAL_CHUNK = 1000  # test images per forward pass in evaluation (bounds the activations' memory)


class CNN(nn.Module):
    """The classifier; `features` gives the penultimate activations (the FID feature space).

    Blocks of `convs_per_block` 3x3 convolutions (each Conv-[BatchNorm]-ReLU) then a 2x2 pool, one block per entry of
    `conv_features`; then [dropout] Dense(hidden)-ReLU [dropout] Dense(classes). The defaults are the Flax MNIST
    example's network; `train=True` uses dropout and the batch's own BatchNorm statistics.
    """

    num_classes: int = 10
    conv_features: tuple[int, ...] = (32, 64)
    hidden: int = 256
    convs_per_block: int = 1
    batch_norm: bool = False
    dropout: float = 0.0
    pool: str = "avg"
    frozen_norms: bool = False  # BatchNorm in inference mode while training (a frozen transferred trunk)

    def setup(self):
        def name(i, j):
            return f"conv{i}" if self.convs_per_block == 1 else f"conv{i}_{j}"

        blocks = [(i, j, f) for i, f in enumerate(self.conv_features) for j in range(self.convs_per_block)]
        # With BatchNorm the convolution's bias is redundant (the norm's offset replaces it).
        self.convs = [nn.Conv(f, (3, 3), use_bias=not self.batch_norm, name=name(i, j)) for i, j, f in blocks]
        if self.batch_norm:
            self.norms = [nn.BatchNorm(momentum=0.9, name=f"bn_{name(i, j)}") for i, j, _ in blocks]
        # A tensor-parallel pair over the mesh's `model` axis (column- then row-split: one all-reduce); with a model
        # axis of 1 (the default) these are plain `nn.Dense` layers.
        self.dense = parallel.dense(self.hidden, "column", name="dense")
        self.head = parallel.dense(self.num_classes, "row", name="head")
        self.drop = nn.Dropout(self.dropout)

    def features(self, x, train: bool = False):
        pool = nn.avg_pool if self.pool == "avg" else nn.max_pool
        for k, conv in enumerate(self.convs):
            x = conv(x)
            if self.batch_norm:
                x = self.norms[k](x, use_running_average=not train or self.frozen_norms)
            x = nn.relu(x)
            if (k + 1) % self.convs_per_block == 0:
                x = pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        if self.dropout:
            x = self.drop(x, deterministic=not train)
        return nn.relu(self.dense(x))  # (B, hidden)

    def __call__(self, x, train: bool = False):
        x = self.features(x, train)
        if self.dropout:
            x = self.drop(x, deterministic=not train)
        return self.head(x)


class MLP(nn.Module):
    """A fully connected classifier on the flattened image: [Dense(h)-ReLU [dropout]] per entry of `hidden_sizes`,
    then Dense(classes). LeNet-300-100 (LeCun et al. 1998) is `hidden_sizes=(300, 100)`; Hinton et al.'s (2015)
    distillation nets are (1200, 1200) and (800, 800). `features` gives the last hidden layer."""

    num_classes: int = 10
    hidden_sizes: tuple[int, ...] = (300, 100)
    dropout: float = 0.0

    def setup(self):
        self.hidden = [nn.Dense(size, name=f"dense{i}") for i, size in enumerate(self.hidden_sizes)]
        self.head = nn.Dense(self.num_classes, name="head")
        self.drop = nn.Dropout(self.dropout)

    def features(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        for dense in self.hidden:
            x = nn.relu(dense(x))
            if self.dropout:
                x = self.drop(x, deterministic=not train)
        return x  # (B, hidden_sizes[-1])

    def __call__(self, x, train: bool = False):
        return self.head(self.features(x, train))


class ClassifierState(TrainState):
    """`params` holds the trained variables (`{"params": ...}`); `model_state` the others (`{"batch_stats": ...}` with
    BatchNorm, else empty); `early` the early-stopping bookkeeping when a validation split is held out."""

    rng: jax.Array
    model_state: Any = struct.field(default_factory=dict)
    early: early_stopping.EarlyStopping | None = None

    def variables(self):
        """Everything `apply` needs: the parameters and the model's state."""
        return {**self.params, **self.model_state}

    def train_forward(self, params, images, key):
        """The training pass of `params` on `images`: dropout drawn from `key` (None: no rng) and BatchNorm on the
        batch's statistics. Returns (outputs, the model state it leaves: BatchNorm's running averages moved on)."""
        mutable = list(self.model_state)
        rngs = {} if key is None else {"dropout": key}
        variables = {**params, **self.model_state}
        if not mutable:
            return self.apply_fn(variables, images, train=True, rngs=rngs), self.model_state
        outputs, updates = self.apply_fn(variables, images, train=True, rngs=rngs, mutable=mutable)
        return outputs, {**self.model_state, **updates}


def make_model(config, num_classes: int = 10) -> CNN | MLP:
    """The network, computing in `config.precision`'s type (`lepton_jax/techniques/precision.py`); with
    `quantize=qat`, through int8 fake quantisation (`lepton_jax/techniques/quantize.py`)."""
    return precision.module(quantize.qat_model(make_cnn(config, num_classes), config), config)


def make_cnn(config, num_classes: int = 10) -> CNN | MLP:
    """The network the config describes: the CNN, or with `model="mlp"` the MLP (in float32: wrap it with
    `precision.module`, as `make_model` does)."""
    if config.get("model", "cnn") == "mlp":
        return MLP(num_classes, tuple(config.hidden_sizes), config.get("dropout", 0.0))
    return CNN(
        num_classes,
        tuple(config.conv_features),
        config.hidden,
        convs_per_block=config.get("convs_per_block", 1),
        batch_norm=config.get("batch_norm", False),
        dropout=config.get("dropout", 0.0),
        pool=config.get("pool", "avg"),
        frozen_norms=bool(config.get("init_from")) and config.get("freeze_trunk", False),
    )


def make_init(config, model: CNN, image_shape, steps_per_epoch: int = 1, read_source: bool = True) -> Any:
    """`key -> ClassifierState` for one seed; the factory's optimiser (`lepton_jax/techniques/optim.py`; the
    classifier's default: Adam with a cosine decay to 0) over the run's steps, masked for a frozen transferred trunk.

    `read_source=False` builds the state's structure without reading `config.init_from`'s parameters (to restore the
    run's own checkpoint)."""
    tx = optim.make(config, config.num_epochs * steps_per_epoch, steps_per_epoch)
    early = config.get("val_fraction", 0.0) > 0
    if config.get("init_from") and config.get("freeze_trunk", False):
        tx = transfer.freeze(tx, transfer.excluded(config))
    source = transfer.read_variables(config.init_from) if config.get("init_from") and read_source else None
    if source is not None:  # checked here, not while `init` is traced: a mismatch is one line, not a JAX traceback
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)))
        transfer.transfer(nn.unbox(shapes), source, transfer.excluded(config))

    def init(key):
        init_key, rng = jax.random.split(key)
        variables = dict(nn.unbox(model.init(init_key, jnp.zeros((1, *image_shape)))))
        if source is not None:  # the other run's trunk (seed 0's), the excluded modules as initialised here
            variables = transfer.transfer(variables, source, transfer.excluded(config))
        params = {"params": variables.pop("params")}
        state = ClassifierState.create(apply_fn=model.apply, params=params, tx=tx, rng=rng, model_state=variables)
        if early:  # the kept variables: parameters and BatchNorm statistics together
            state = state.replace(early=early_stopping.EarlyStopping.create(state.variables()))
        return state

    return init


def train_step(
    state: ClassifierState,
    batch,
    key,
    augment_fn=None,
    criterion=imbalance.cross_entropy,
    teacher: distill.Teacher | None = None,
):
    """One optimiser step on `criterion` (softmax cross-entropy, or a class-weighted or focal loss:
    `lepton_jax/techniques/imbalance.py`); `batch` = (images (B,H,W,1), labels (B,)); `key` drives dropout and, with
    `augment_fn` (`lepton_jax/techniques/augment.py`), the batch's augmentation. With a `teacher`
    (`lepton_jax/techniques/distill.py`) the criterion is `criterion(logits, labels, teacher_logits)`, the teacher's
    logits on the same augmented batch."""
    images, labels = batch
    if augment_fn is not None:  # its own stream of the key: the dropout masks stay those of an unaugmented run
        images = augment_fn(jax.random.fold_in(key, 1), images)
    targets = () if teacher is None else (distill.teacher_logits(teacher, images),)

    def loss_fn(params):
        logits, model_state = state.train_forward(params, images, key)
        return criterion(logits, labels, *targets), (logits, model_state)

    (loss, (logits, model_state)), grads = precision.value_and_grad(loss_fn, state.opt_state, has_aux=True)(
        state.params
    )
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    state = state.apply_gradients(grads=grads).replace(model_state=model_state)
    return state, {"train/loss": loss, "train/accuracy": accuracy}


def make_step(config, train_labels: np.ndarray, num_classes: int, image_shape=None):
    """`(step, sampler)` for `epochs.make_epoch`: `train_step` with the config's augmentation and loss (plain, or
    class-weighted / focal from the training labels' counts, or with `config.teacher` the distillation loss from
    that run's network, read here: `image_shape` needed), and its batch sampler (class-balanced, or None)."""
    criterion = imbalance.classification_loss(config, np.bincount(train_labels, minlength=num_classes))
    teacher, distilling = None, distill.settings(config)
    if distilling["teacher"] is not None:
        teacher = distill.load_teacher(distilling["teacher"], make_model, image_shape, num_classes, "classifier")
        criterion = distill.criterion(distilling["distill_temperature"], distilling["distill_alpha"])
    step = functools.partial(train_step, augment_fn=augment.make(config), criterion=criterion, teacher=teacher)
    return step, imbalance.sampler(config, lambda batch_data: batch_data[1])  # data = (images, labels)


def make_predict(model: CNN, seed_loop: str = "vmap"):
    """Jitted `(variables with a seed axis, images) -> logits (seeds, N, classes)`, in chunks of `EVAL_CHUNK`; the
    seeds share the program as `seed_loop` says (`lepton_jax.seeds`)."""

    def one_seed(variables, images):
        return epochs.map_in_chunks(lambda x: model.apply(variables, x), images, EVAL_CHUNK)

    return jax.jit(seeds.over_seeds(one_seed, (0, None), seed_loop))


def make_evaluate(model: CNN, prefix: str = "test", seed_loop: str = "vmap"):
    """Jitted `(variables with a seed axis, images, labels) -> {<prefix>/loss, <prefix>/accuracy}` per seed."""
    predict = make_predict(model, seed_loop)

    def evaluate(variables, images, labels):
        logits = predict(variables, images)
        loss = jax.vmap(lambda lg: optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean())(logits)
        return {f"{prefix}/loss": loss, f"{prefix}/accuracy": jnp.mean(jnp.argmax(logits, -1) == labels, axis=-1)}

    return jax.jit(evaluate)


def class_report(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    """Per seed, from labels (N,) and predictions (seeds, N): accuracy, macro-F1, balanced accuracy, per-class recall
    (`recall/<class>`) and the confusion matrices (`confusion`, (seeds, C, C) counts, rows = true class)."""
    matrices = jax.vmap(lambda p: metrics.confusion_matrix(jnp.asarray(labels), p, num_classes))(predictions)
    scores = jax.vmap(metrics.classification_scores)(matrices)
    recall = np.asarray(jax.vmap(lambda m: metrics.per_class_scores(m)["recall"])(matrices))  # (seeds, C)
    out = {name: np.asarray(scores[name]) for name in ("accuracy", "macro_f1", "balanced_accuracy")}
    out.update({f"recall/{c}": recall[:, c] for c in range(num_classes)})
    return out | {"confusion": np.asarray(matrices).astype(np.int64)}


def report_plots(data: image_data.ImageData, images, labels, predictions, confusion, plots: str) -> None:
    """`confusion_matrix.png` (summed over seeds) and `misclassified.png` (seed 0's first 32 errors)."""
    plotting.confusion_matrix(confusion.sum(0), os.path.join(plots, "confusion_matrix.png"), f"{data.name} test set")
    errors = np.flatnonzero(predictions[0] != labels)
    wrong = errors[:32]
    captions = [f"{labels[i]} → {predictions[0][i]}" for i in wrong]
    title = f"misclassified {data.name} test images (true → predicted), seed 0: {len(wrong)} of {len(errors)}"
    plotting.labelled_images(images[wrong], captions, os.path.join(plots, "misclassified.png"), title)


def split_training(data: image_data.ImageData, config):
    """((train images, labels), (validation images, labels) or None): the first `config.train_examples` of the
    training set (0: all), and for early stopping (`lepton_jax/techniques/early_stopping.py`) a `val_fraction` of
    that many images, held out from its end (`val_from="train"`) or, with `val_from="rest"`, taken from the training
    images after it, so that the run still trains on every one of its `train_examples`."""
    total = len(data.train_images)
    count = config.get("train_examples", 0) or total
    require(count <= total, f"config.train_examples={count} is more than the {total} training images of {data.name}")
    settings = technique_settings(config, "validation")
    images, labels = data.train_images[:count], data.train_labels[:count]
    if settings["val_from"] == "rest" and config.get("val_fraction", 0.0) > 0:
        held = max(1, int(round(count * config.val_fraction)))
        require(
            count + held <= total,
            f"config.val_from='rest' needs {held} training images after the first {count} for validation, but "
            f"{data.name} has {total - count}; lower config.train_examples or config.val_fraction",
        )
        return (images, labels), (data.train_images[count : count + held], data.train_labels[count : count + held])
    held = early_stopping.holdout(count, config.get("val_fraction", 0.0))
    if not held:
        return (images, labels), None
    cut = count - held
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def run(config, workdir: str, data: image_data.ImageData | None = None):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results)."""
    data = image_data.select_classes(
        data or image_data.load(config.dataset, config.data_dir), config.get("classes", "")
    )
    model = make_model(config, data.num_classes)
    mesh = parallel.mesh_from_config(config)
    keep = imbalance.training_subset(config, data.train_labels)
    if keep is not None:  # an imbalanced training set (Buda et al.); the test set stays as it is
        data = data._replace(train_images=data.train_images[keep], train_labels=data.train_labels[keep])
    train_host, val_host = split_training(data, config)
    # Where the training set lives and where evaluation runs: `config.placement` (`lepton_jax/placement.py`).
    train = placement.put_data(config, train_host, mesh)
    test_images, test_labels = placement.eval_arrays(config, (data.test_images, data.test_labels), mesh)
    step, sampler = make_step(config, train_host[1], data.num_classes, data.image_shape)
    seed_loop = config.get("seed_loop", "vmap")
    epoch_fn = placement.make_epoch(config, step, config.batch_size, mesh, seed_loop=seed_loop, sampler=sampler)
    evaluate = placement.on_eval_device(config, make_evaluate(model, seed_loop=seed_loop))
    init_one = make_init(config, model, data.image_shape, len(train_host[0]) // config.batch_size)

    validate = None
    if val_host is not None:
        val_images, val_labels = epochs.to_device(val_host, mesh)  # steers training: not moved by `placement.eval`
        evaluate_val = make_evaluate(model, "val", seed_loop)
        validate = lambda variables: evaluate_val(variables, val_images, val_labels)  # noqa: E731

    def final(variables):
        predict = placement.on_eval_device(config, make_predict(model, seed_loop))
        predictions = np.asarray(jnp.argmax(predict(variables, test_images), -1))
        report = class_report(data.test_labels, predictions, data.num_classes)
        per_seed = {f"test/{k}": v for k, v in report.items() if k != "confusion"}
        per_seed["test/loss"] = np.asarray(evaluate(variables, test_images, test_labels)["test/loss"])
        results = run_lib.seed_summary(per_seed)
        if prune.settings(config, 1):  # the share of zeroed kernel weights the test metrics were measured with
            results |= run_lib.seed_summary({"test/sparsity": prune.seed_sparsity(variables)})
        if quantize.mode(config) != "none" and parallel.is_main_process():
            # Seed 0 quantised to int8 (PTQ: calibrated on training batches; QAT: converted), exported, compared.
            calibration = quantize.calibration_images(config, train_host[0])
            results |= quantize.report(
                model,
                seeds.tree_slice(variables, 0),
                calibration,
                data.test_images,
                data.test_labels,
                workdir,
                config.batch_size,
            )
        if parallel.is_main_process():
            report_plots(data, data.test_images, data.test_labels, predictions, report["confusion"], plots_dir(workdir))
        return results

    return fit_images(
        config,
        workdir,
        model,
        mesh,
        init_one=init_one,
        image_shape=data.image_shape,
        epoch=lambda state: epoch_fn(state, train),
        num_train=len(train_host[0]),
        validate=validate,
        evaluate=lambda variables: evaluate(variables, test_images, test_labels),
        final=final,
        plot_keys=("train/accuracy", "test/accuracy"),
        title=f"CNN classifier on {data.name}",
        desc=f"classifier {data.name}",
        augment_images=data.train_images[:8],
    )


def plots_dir(workdir: str) -> str:
    """Where a run's PNGs go."""
    return os.path.join(workdir, "plots")


def fit_images(
    config,
    workdir: str,
    model,
    mesh,
    *,
    init_one,
    image_shape,
    epoch,
    num_train: int,
    validate,
    evaluate,
    final,
    plot_keys: tuple[str, ...],
    title: str,
    desc: str,
    augment_images=None,
):
    """The image trainers' shared run (the classifier, the multi-task CNN, the capsule network): `config.num_seeds`
    seeds from `init_one` on `mesh`, `epoch(state)` per epoch, early stopping on `validate(variables)` (None: no
    validation split) with the best parameters kept, `evaluate(variables)` on the test set after each epoch, and
    `final(variables)` -> results on the kept parameters (plus `num_seeds` and `best_epoch`). The `test/` keys of
    `plot_keys` get their `val/` twins when there is a validation split; `augment_images` are drawn augmented into
    `plots/augment.png` when `config` augments. Returns `supervised.fit`'s (final state, results)."""
    train_epoch, kept = early_stopping.watch(
        lambda state, epoch_index: epoch(state),
        validate,
        config.get("patience", 0),
        technique_settings(config, "validation")["monitor"],
    )

    def final_results(state, last_eval):
        results = final(kept(state)) | {"num_seeds": int(config.num_seeds)}
        if state.early is not None:
            results |= run_lib.seed_summary({"best_epoch": np.asarray(state.early.best_epoch) + 1})
        if augment_images is not None and augment.make(config) is not None and parallel.is_main_process():
            key = jax.random.PRNGKey(config.seed)
            augment.sample_grid(config, augment_images, key, os.path.join(plots_dir(workdir), "augment.png"))
        return results

    if validate is not None:
        plot_keys += tuple("val/" + key.split("/", 1)[1] for key in plot_keys if key.startswith("test/"))
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)))  # no arrays
    task = supervised.Task(
        # The state where the mesh wants it: the tensor-parallel layers' parameters (and their optimiser moments)
        # split over `model`, everything else replicated (`lepton_jax/parallel.py`).
        init=epochs.init_seeds(init_one, config.num_seeds, mesh, boxed_params=boxed),
        train_epoch=train_epoch,
        evaluate=lambda state: evaluate(state.variables()),
        num_epochs=config.num_epochs,
        done=(lambda state: early_stopping.all_stopped(state.early)) if validate is not None else None,
        final=final_results,
        params=kept,
        plot_keys=plot_keys,
        title=title,
        examples_per_epoch=(num_train // config.batch_size) * config.batch_size * int(config.num_seeds),
    )
    return supervised.fit(config, workdir, task, desc=desc)


@registry.register("classifier")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]
