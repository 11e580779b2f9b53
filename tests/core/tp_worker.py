"""Worker for the tensor-parallelism tests: trains on a (data, model) mesh and reports the parameters and layout.

    python tests/core/tp_worker.py MESH OUT.npz     # e.g. data:2,model:2; the device count comes from XLA_FLAGS

Trains GCN (the node-classification trainer on the karate club) and the image classifier (its `dense -> head` pair
column- then row-split, trained by `lepton_jax.epochs`) for a few epochs.
Writes their parameters to OUT.npz and prints, as the last line, JSON with the kernels' PartitionSpecs and per-device
shapes, the number of XLA compiles after the first epoch, whether the state's shardings stayed those of the
initial state, and the one-line errors of a mesh that does not fit the devices and of a split that cannot be made.
The tests also call `train_gcn` and `train_classifier` in their own one-device process, for the reference.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from graphs import node_classification
from graphs.configs import gcn as gcn_config
from lepton_jax import epochs, parallel
from lepton_jax.errors import UserError
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data
from lepton_jax.vision.configs import classifier as classifier_config

EPOCHS = 3
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def gcn_config_for(mesh: str):
    config = gcn_config.get_config("karate,smoke")  # GCN 34-4-4-2-2: two column/row pairs
    config.mesh = mesh
    config.dropout = 0.5  # dropout on split activations too: its masks must not depend on the layout
    return config


def train_gcn(mesh: str, after_first_epoch=lambda: None):
    """`(initial state, state after EPOCHS epochs)` of the node-classification trainer on `mesh`."""
    config = gcn_config_for(mesh)
    task = node_classification.make_task(config, workdir="unused")  # `final` (the only writer) is not called
    state = task.init(jax.random.PRNGKey(config.seed))
    initial = jax.tree.map(jnp.copy, state)  # the state itself is donated to the first step
    for epoch in range(EPOCHS):
        state, _ = task.train_epoch(state, epoch)
        if epoch == 0:
            after_first_epoch()
    return initial, jax.block_until_ready(state)


def train_classifier(mesh: str, after_first_epoch=lambda: None):
    """`(initial state, state after EPOCHS epochs)` of the image classifier (a small CNN whose `dense -> head` pair
    is column- then row-split) on 64 of the 8x8 digits: 2 seeds, batches of 16 over `data`, built as
    `classifier.run` builds it (`lepton_jax.epochs`, whose step has no `out_shardings`: the layout must propagate)."""
    config = classifier_config.get_config("digits,smoke")
    config.conv_features, config.hidden, config.num_seeds, config.batch_size = (4,), 8, 2, 16
    config.mesh = mesh
    mesh = parallel.mesh_from_config(config)
    data = image_data.load("digits")
    images, labels = data.train_images[:64], data.train_labels[:64]
    model = classifier.make_model(config)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *data.image_shape)))
    init = epochs.init_seeds(classifier.make_init(config, model, data.image_shape, 4), 2, mesh, boxed_params=boxed)
    step, sampler = classifier.make_step(config, labels, data.num_classes)
    epoch_fn = epochs.make_epoch(step, config.batch_size, mesh, sampler=sampler)
    train = epochs.to_device((images, labels), mesh)
    state = init(jax.random.PRNGKey(0))
    initial = jax.tree.map(jnp.copy, state)  # the state itself is donated to the first step
    for epoch in range(EPOCHS):
        state, _ = epoch_fn(state, train)
        if epoch == 0:
            after_first_epoch()
    return initial, jax.block_until_ready(state)


def layout(params) -> dict:
    """`{path: [spec, per-device shape]}` of each kernel (shapes with the seed axis)."""
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): [
            str(x.sharding.spec),
            list(x.sharding.shard_shape(x.shape)),
        ]
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
        if path[-1].key == "kernel"
    }


def same_layout(a, b) -> bool:
    """Every leaf of `b` laid out as in `a` (`P(None, "model")` is `P(None, "model", None)`)."""
    return all(x.sharding.is_equivalent_to(y.sharding, x.ndim) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def error_of(fn) -> str:
    try:
        fn()
    except UserError as error:
        return str(error)
    return ""


def main(mesh: str, out: str):
    compiles, marks = [], {}
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: compiles.append(event) if event == COMPILE_EVENT else None
    )
    report, arrays = {"devices": jax.device_count()}, {}
    for name, train in (("gcn", train_gcn), ("classifier", train_classifier)):
        initial, final = train(mesh, lambda name=name: marks.__setitem__(name, len(compiles)))
        params = final.train_state.params if name == "gcn" else final.params
        report[name] = {
            "layout": layout(params),
            "compiles_after_first_epoch": len(compiles) - marks[name],
            "same_layout": same_layout(initial, final),
        }
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
            arrays[f"{name}{jax.tree_util.keystr(path)}"] = np.asarray(x)
    report["errors"] = {
        "data:3,model:2": error_of(lambda: parallel.mesh_from_config({"mesh": "data:3,model:2"})),
        # conv_2's kernel (4, 2) cannot be split 4 ways on its output axis.
        "model:4": error_of(lambda: node_classification.make_task(gcn_config_for("model:4"), workdir="unused")),
    }
    np.savez(out, **arrays)
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
