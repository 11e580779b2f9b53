"""A small CNN image classifier (the Flax MNIST example's network), trainable through the launcher.

    python -m scripts.train --config=lepton_jax/vision/configs/classifier.py:mnist --workdir=runs/classifier-mnist

Conv(32, 3x3)-ReLU-AvgPool, Conv(64, 3x3)-ReLU-AvgPool, Dense(256)-ReLU, Dense(classes); Adam, cross-entropy. Its
penultimate layer (the 256 ReLU features) is the feature space of the generative models' FID/KID, so `load_trained`
restores a finished run's parameters for reuse, and `ensure_trained` trains one first when there is none.
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax.training.train_state import TrainState

from lepton_jax import checkpoint, epochs, parallel, registry, seeds, supervised
from lepton_jax import run as run_lib
from lepton_jax.errors import UserError
from lepton_jax.vision import data as image_data

EVAL_CHUNK = 1000  # test images per forward pass in evaluation (bounds the activations' memory)


class CNN(nn.Module):
    """The classifier; `features` gives the penultimate activations (the FID feature space)."""

    num_classes: int = 10
    conv_features: tuple[int, ...] = (32, 64)
    hidden: int = 256

    def setup(self):
        self.convs = [nn.Conv(f, (3, 3), name=f"conv{i}") for i, f in enumerate(self.conv_features)]
        self.dense = nn.Dense(self.hidden, name="dense")
        self.head = nn.Dense(self.num_classes, name="head")

    def features(self, x):
        for conv in self.convs:
            x = nn.avg_pool(nn.relu(conv(x)), (2, 2), strides=(2, 2))
        return nn.relu(self.dense(x.reshape(x.shape[0], -1)))  # (B, hidden)

    def __call__(self, x):
        return self.head(self.features(x))


class ClassifierState(TrainState):
    rng: jax.Array


def make_model(config, num_classes: int = 10) -> CNN:
    return CNN(num_classes, tuple(config.conv_features), config.hidden)


def make_init(config, model: CNN, image_shape, steps_per_epoch: int = 1) -> Any:
    """`key -> ClassifierState` for one seed; Adam with a cosine decay to 0 over the run's steps."""
    tx = optax.adam(optax.cosine_decay_schedule(config.lr, max(1, config.num_epochs * steps_per_epoch)))

    def init(key):
        init_key, rng = jax.random.split(key)
        params = model.init(init_key, jnp.zeros((1, *image_shape)))
        return ClassifierState.create(apply_fn=model.apply, params=params, tx=tx, rng=rng)

    return init


def train_step(state: ClassifierState, batch, key):
    """One Adam step on softmax cross-entropy; `batch` = (images (B,H,W,1), labels (B,))."""
    del key
    images, labels = batch

    def loss_fn(params):
        logits = state.apply_fn(params, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state.apply_gradients(grads=grads), {"train/loss": loss, "train/accuracy": accuracy}


def make_evaluate(model: CNN):
    """Jitted `(params with a seed axis, images, labels) -> {test/loss, test/accuracy}` per seed."""

    def one_seed(params, images, labels):
        logits = epochs.map_in_chunks(lambda x: model.apply(params, x), images, EVAL_CHUNK)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return {"test/loss": loss, "test/accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def run(config, workdir: str, data: image_data.ImageData | None = None):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results)."""
    data = data or image_data.load(config.dataset, config.data_dir)
    model = make_model(config, data.num_classes)
    mesh = parallel.make_mesh()
    train = epochs.to_device((data.train_images, data.train_labels), mesh)
    test_images, test_labels = epochs.to_device((data.test_images, data.test_labels), mesh)
    epoch_fn = epochs.make_epoch(train_step, config.batch_size, mesh)
    evaluate = make_evaluate(model)
    init_one = make_init(config, model, data.image_shape, len(data.train_images) // config.batch_size)
    task = supervised.Task(
        init=epochs.init_seeds(init_one, config.num_seeds, mesh),
        train_epoch=lambda state, epoch: epoch_fn(state, train),
        evaluate=lambda state: evaluate(state.params, test_images, test_labels),
        num_epochs=config.num_epochs,
        final=lambda state, last_eval: run_lib.seed_summary(last_eval) | {"num_seeds": int(config.num_seeds)},
        params=lambda state: state.params,
        plot_keys=("train/accuracy", "test/accuracy"),
        title=f"CNN classifier on {data.name}",
    )
    return supervised.fit(config, workdir, task, desc=f"classifier {data.name}")


@registry.register("classifier")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]


def load_trained(workdir: str, image_shape, num_classes: int = 10) -> tuple[CNN, Any]:
    """The model and seed-0 parameters of a finished classifier run in `workdir`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(os.path.join(workdir, "results.json")) or not os.path.isfile(path):
        raise UserError(
            f"no finished classifier run in {workdir} (train one with lepton_jax/vision/configs/classifier.py)"
        )
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    model = make_model(config, num_classes)
    init_one = make_init(config, model, image_shape)
    key = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(epochs.init_seeds(init_one, config.num_seeds, parallel.make_mesh()), key)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3))
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    if restored is None:
        raise UserError(f"classifier run in {workdir} has no checkpoint")
    return model, seeds.tree_slice(restored[1].params, 0)


def ensure_trained(config, workdir: str, data: image_data.ImageData) -> tuple[CNN, Any, dict]:
    """`load_trained(workdir)`, training the classifier per `config` there first if it has not finished.

    Returns:
      (model, seed-0 params, the classifier run's results).
    """
    if not os.path.isfile(os.path.join(workdir, "results.json")):
        run(config, workdir, data)
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    model, params = load_trained(workdir, data.image_shape, data.num_classes)
    return model, params, results
