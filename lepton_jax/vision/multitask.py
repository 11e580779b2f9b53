"""Multi-task image classification on MultiMNIST: the classifier's CNN trunk with one head per digit.

    python -m scripts.train --config=lepton_jax/vision/configs/multitask.py:mnist                  # both digits
    python -m scripts.train --config=lepton_jax/vision/configs/multitask.py:mnist --config.single_task=left

MultiMNIST (`lepton_jax.vision.data.multi_mnist`) overlays two digits of different classes; the tasks are the
classes of the top-left digit (`left`) and of the bottom-right one (`right`). The network is the image
classifier's CNN (`lepton_jax.vision.classifier.CNN`, its `features`: the convolutions and the dense layer) as a
shared trunk with a dense head per task (`lepton_jax.techniques.multitask.MultiHead`), trained on the weighted sum
of the tasks' mean cross-entropies (`task_weights`); `single_task=<task>` builds and trains that head alone, the
single-task baseline from the same code. The dataset is the same in every run (built with `DATA_SEED`), so the
single-task and multi-task numbers are measured on the same images.

`results.json` has, per task, `test/<task>/accuracy`, `macro_f1`, `balanced_accuracy`, `recall/<class>` and
`loss`, and `test/loss` (the weighted total), each per seed (`_mean`/`_std`/`per_seed/`); `plots/` has the
learning curves, `examples.png` (the first training images with their two labels) and, per task, `<task>/`
`confusion_matrix.png` and `misclassified.png`. The workdir, resume, early stopping (`val_fraction`, `patience`:
the weighted validation loss) and the mesh (`config.mesh`: the CNN's dense layer column-split, each head
row-split) are the classifier's.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import epochs, parallel, plotting, registry
from lepton_jax import run as run_lib
from lepton_jax.techniques import imbalance, multitask, precision
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data

DATA_SEED = 0  # MultiMNIST's construction: the same images for every run, whatever its `config.seed`


def make_model(config, heads: dict[str, int]) -> multitask.MultiHead:
    """The classifier's CNN (`classifier.make_cnn`, its `features`) as the trunk of one head per task, computing
    in `config.precision`'s type as a whole.

    Args:
      config: the run's config (the CNN's keys, `dropout`, `precision`).
      heads: `{task: classes}`.
    """
    cnn = classifier.make_cnn(config)
    model = multitask.MultiHead(cnn, heads, method="features", dropout=config.get("dropout", 0.0), head_split="row")
    return precision.module(model, config)


def load_data(config, source: image_data.ImageData | None = None) -> image_data.MultiImageData:
    """MultiMNIST built from `source` (default: `config.dataset` read from `config.data_dir`) as the config says."""
    source = source or image_data.load(config.dataset, config.data_dir)
    return image_data.multi_mnist(
        source, DATA_SEED, config.train_examples, config.test_examples, config.max_shift, config.image_size
    )


def train_step(state: classifier.ClassifierState, batch, key, weights: dict[str, float]):
    """One optimiser step on `sum_t weights[t] * cross-entropy_t`; `batch` = (images (B,H,W,1), {task: labels (B,)});
    `key` drives dropout. Metrics: `train/loss` (the weighted total) and per task `train/<task>/loss` and
    `train/<task>/accuracy`."""
    images, labels = batch

    def loss_fn(params):
        logits, model_state = state.train_forward(params, images, key)
        losses = {task: imbalance.cross_entropy(logits[task], labels[task]) for task in weights}
        return multitask.weighted_loss(losses, weights)[0], (losses, logits, model_state)

    (loss, (losses, logits, model_state)), grads = precision.value_and_grad(loss_fn, state.opt_state, has_aux=True)(
        state.params
    )
    state = state.apply_gradients(grads=grads).replace(model_state=model_state)
    metrics = {"train/loss": loss}
    for task in weights:
        metrics[f"train/{task}/loss"] = losses[task]
        metrics[f"train/{task}/accuracy"] = jnp.mean(jnp.argmax(logits[task], -1) == labels[task])
    return state, metrics


def make_evaluate(model, weights: dict[str, float], prefix: str = "test", seed_loop: str = "vmap"):
    """Jitted `(variables with a seed axis, images, {task: labels}) -> {<prefix>/loss (the weighted total),
    <prefix>/<task>/loss, <prefix>/<task>/accuracy, <prefix>/accuracy (the tasks' mean)}`, each (seeds,); one
    forward pass for every task."""
    predict = classifier.make_predict(model, seed_loop)  # {task: (seeds, N, classes)}

    def evaluate(variables, images, labels):
        logits = predict(variables, images)
        losses = {
            task: jax.vmap(imbalance.cross_entropy, in_axes=(0, None))(logits[task], labels[task]) for task in weights
        }
        out = {f"{prefix}/loss": multitask.weighted_loss(losses, weights)[0]}
        for task in weights:
            out[f"{prefix}/{task}/loss"] = losses[task]
            out[f"{prefix}/{task}/accuracy"] = jnp.mean(jnp.argmax(logits[task], -1) == labels[task], axis=-1)
        out[f"{prefix}/accuracy"] = sum(out[f"{prefix}/{task}/accuracy"] for task in weights) / len(weights)
        return out

    return jax.jit(evaluate)


def by_task(labels: np.ndarray, tasks, weights) -> dict[str, np.ndarray]:
    """`{task: (N,) labels}` of the tasks trained, from the (N, T) labels whose columns are `tasks`."""
    return {task: labels[:, tasks.index(task)] for task in weights}


def run(config, workdir: str, source: image_data.ImageData | None = None):
    """Trains per `config` into `workdir` on MultiMNIST built from `source` (default: `config.dataset`); returns
    (final state with a seed axis, results)."""
    weights = multitask.task_weights(config, image_data.MULTI_TASKS)  # a bad value stops here, before any work
    data = load_data(config, source)
    model = make_model(config, {task: data.num_classes for task in weights})
    mesh = parallel.mesh_from_config(config)
    (train_images, train_labels), val_host = classifier.split_training(data, config)
    train = epochs.to_device((train_images, by_task(train_labels, data.tasks, weights)), mesh)
    test_labels = by_task(data.test_labels, data.tasks, weights)
    test = epochs.to_device((data.test_images, test_labels), mesh)
    step = functools.partial(train_step, weights=weights)
    seed_loop = config.get("seed_loop", "vmap")
    epoch_fn = epochs.make_epoch(step, config.batch_size, mesh, seed_loop=seed_loop)
    evaluate = make_evaluate(model, weights, seed_loop=seed_loop)
    init_one = classifier.make_init(config, model, data.image_shape, len(train_images) // config.batch_size)

    validate = None
    if val_host is not None:
        val = epochs.to_device((val_host[0], by_task(val_host[1], data.tasks, weights)), mesh)
        evaluate_val = make_evaluate(model, weights, "val", seed_loop)
        validate = lambda variables: evaluate_val(variables, *val)  # noqa: E731

    def final(variables):
        logits = classifier.make_predict(model, seed_loop)(variables, test[0])
        evaluation = evaluate(variables, *test)
        per_seed = {name: np.asarray(value) for name, value in evaluation.items() if name.endswith("loss")}
        plots = classifier.plots_dir(workdir)
        for task in weights:
            predictions = np.asarray(jnp.argmax(logits[task], -1))
            report = classifier.class_report(test_labels[task], predictions, data.num_classes)
            per_seed |= {f"test/{task}/{k}": v for k, v in report.items() if k != "confusion"}
            if parallel.is_main_process():
                named = data._replace(name=f"{data.name} {task} digit")
                classifier.report_plots(
                    named, data.test_images, test_labels[task], predictions, report["confusion"], f"{plots}/{task}"
                )
        if parallel.is_main_process():
            captions = [", ".join(str(c) for c in row) for row in data.train_labels[:16]]
            title = f"{data.name} training images ({' digit, '.join(data.tasks)} digit)"
            plotting.labelled_images(data.train_images[:16], captions, os.path.join(plots, "examples.png"), title)
        return run_lib.seed_summary(per_seed)

    return classifier.fit_images(
        config,
        workdir,
        model,
        mesh,
        init_one=init_one,
        image_shape=data.image_shape,
        epoch=lambda state: epoch_fn(state, train),
        num_train=len(train_images),
        validate=validate,
        evaluate=lambda variables: evaluate(variables, *test),
        final=final,
        plot_keys=tuple(f"{split}/{task}/accuracy" for task in weights for split in ("train", "test")),
        title=f"multi-task CNN on {data.name} ({', '.join(f'{t} x{w:g}' for t, w in weights.items())})",
        desc=f"multitask {data.name}",
    )


@registry.register("multitask_classifier")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]
