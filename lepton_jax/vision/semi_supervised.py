"""Semi-supervised image classification: a few labelled images, the rest of the training set unlabelled.

    python -m scripts.train --config=lepton_jax/vision/configs/semi_supervised.py:mnist                 # FixMatch
    python -m scripts.train --config=lepton_jax/vision/configs/semi_supervised.py:mnist --config.semi_method=supervised

The network, its evaluation and its per-class report are the image classifier's (`lepton_jax.vision.classifier`).
`labels_per_class` training images of each class keep their labels (`labelled_subset`: chosen from `config.seed`,
so every method sees the same ones for a seed, and each seed its own); the others are unlabelled (all of them, or
the first `unlabelled_examples`). Each step takes
`batch_size` labelled images (weakly augmented: the shared `augment_*` keys) and `mu` times as many unlabelled
ones, and minimises

    cross-entropy(labelled) + lambda_u * mean over the unlabelled batch of mask * cross-entropy(student, pseudo-label)

where `semi_method` says what the unlabelled term is:

  supervised     none: the labelled images alone (the baseline; the unlabelled images are drawn but never used).
  pseudo_label   Lee (2013): the pseudo-label is the network's own prediction on a weakly augmented unlabelled
                 image (its argmax, a constant of the step), the student the same prediction; only predictions with
                 max probability >= `confidence_threshold` count (mask 1).
  fixmatch       Sohn et al. (2020): the pseudo-label comes from the weakly augmented image (in inference mode:
                 no dropout, BatchNorm's running statistics), the student is the prediction on a strongly augmented
                 copy (`strong_augment`: a larger rotation, zoom and shift, with `strong_thickness` a dilation of
                 the strokes, then cutout).

With `distribution_alignment` (ReMixMatch's, Berthelot et al. 2020) the pseudo-labels' probabilities are divided by
the running mean of the network's predictions on unlabelled images (`SemiState.prediction_mean`, kept in the
checkpoint) and renormalised before the threshold. On MNIST with 100 labels neither it nor a longer run stops the
drift that a thick upright 1 is an 8 (the ten labelled 1s of seed 0 are thin): the dilation does, because it makes
thin and thick strokes one pseudo-label's views.

`lambda_u` rises linearly from 0 over the first `lambda_u_rampup` of the run (0: at full weight from the start, as
FixMatch, whose threshold keeps the early, unconfident predictions out). The labelled and student images go through
the network in one batch (BatchNorm sees both, as in FixMatch).

An epoch is as many steps as the training set holds batches of `batch_size * (1 + mu)` images (so about one pass
over the unlabelled images), the same for every method: the labelled batches (and so the supervised baseline's whole
run) are identical across methods for a seed. The labelled batches run through permutations of the labelled
images one after another, the unlabelled ones through permutations of the unlabelled images.

Logged each epoch: `train/supervised_loss`, `train/unlabelled_loss`, `train/mask_rate` (the share of unlabelled
images whose pseudo-label passes the threshold) and `train/pseudo_label_accuracy` (the share of those whose
pseudo-label is the true class: a diagnostic, the only use of the unlabelled images' labels; no loss reads them).
`results.json` has the classifier's test report (`test/accuracy`, `test/macro_f1`, `test/balanced_accuracy`,
`test/recall/<class>`, `test/loss`) and `test/error` (1 - accuracy), per seed; `plots/` the classifier's plots,
`labelled.png` (the labelled images) and `strong_augment.png`.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lepton_jax import epochs, parallel, plotting, registry, supervised
from lepton_jax import run as run_lib
from lepton_jax.config import require
from lepton_jax.errors import UserError
from lepton_jax.techniques import augment, imbalance, precision
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data
from lepton_jax.vision.configs.semi_supervised import METHODS

SUBSET_STREAM = 7  # the labelled subset's own random stream of the seed (apart from anything else drawn from it)
ALIGNMENT_MOMENTUM = 0.999  # distribution alignment's running mean: about the last 1000 steps' predictions


def labelled_subset(labels: np.ndarray, per_class: int, seed: int, num_classes: int) -> np.ndarray:
    """(num_classes * per_class,) sorted indices of the labelled training images: `per_class` of each class,
    uniformly without replacement, deterministic for `seed` (NumPy's generator on `[seed, SUBSET_STREAM]`).

    Raises:
      UserError: a class with fewer than `per_class` images.
    """
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise UserError(
                f"config.labels_per_class={per_class} is more than the {len(members)} training images of class {c}"
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def training_set(data: image_data.ImageData, config) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The training images a run uses: ((images, labels, is_labelled (N,) bool), the labelled images' indices into
    `data`'s training set). The labelled ones are `labelled_subset`'s; the unlabelled ones every other training image,
    or with `config.unlabelled_examples` > 0 the first that many of them."""
    chosen = labelled_subset(data.train_labels, config.labels_per_class, config.seed, data.num_classes)
    is_labelled = np.zeros(len(data.train_labels), bool)
    is_labelled[chosen] = True
    unlabelled = np.flatnonzero(~is_labelled)
    count = config.get("unlabelled_examples", 0) or len(unlabelled)
    require(
        count <= len(unlabelled),
        f"config.unlabelled_examples={count} is more than the {len(unlabelled)} unlabelled images of {data.name}",
    )
    keep = np.sort(np.concatenate([chosen, unlabelled[:count]]))
    return (data.train_images[keep], data.train_labels[keep], is_labelled[keep]), chosen


def cutout(key: jax.Array, image: jax.Array, size: int) -> jax.Array:
    """`image` (H, W, C) with a `size` x `size` square set to 0 (the digits' background), its centre uniform over
    the image, so part of it may fall outside (DeVries & Taylor 2017)."""
    height, width = image.shape[:2]
    centre = jax.random.randint(key, (2,), 0, jnp.array([height, width]))
    top, left = centre[0] - size // 2, centre[1] - size // 2
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (H, W)
    return jnp.where(inside[..., None], 0.0, image)


def strong_settings(config) -> dict:
    """The strong augmentation's affine part as `augment.draw` reads it (crop and flip off)."""
    return {
        "augment_crop": 0,
        "augment_flip": False,
        "augment_rotate": config.strong_rotate,
        "augment_scale": config.strong_scale,
        "augment_shift": config.strong_shift,
    }


def make_strong(config):
    """`strong(key, images) -> images`: `strong_augment` with the config's `strong_*` keys."""
    return functools.partial(
        strong_augment,
        values=strong_settings(config),
        cutout_size=config.strong_cutout,
        thickness=config.get("strong_thickness", 0),
    )


def thicken(key: jax.Array, image: jax.Array, radius: int) -> jax.Array:
    """`image` (H, W, C) with probability 1/2 as it is, else with its strokes thickened: a grey-scale dilation (the
    max over a square neighbourhood) of a radius drawn from 1..`radius` pixels. A digit's thickness is a nuisance
    that no affine map or cutout changes (the reverse, erosion, would erase MNIST's 2-pixel strokes outright)."""
    on_key, size_key = jax.random.split(key)
    size = jnp.where(jax.random.bernoulli(on_key), jax.random.randint(size_key, (), 1, radius + 1), 0)
    out = image
    for r in range(1, radius + 1):  # static windows; the drawn radius picks one
        window = (2 * r + 1, 2 * r + 1, 1)
        dilated = jax.lax.reduce_window(image, -jnp.inf, jax.lax.max, window, (1, 1, 1), "SAME")
        out = jnp.where(size == r, dilated, out)
    return out


def strong_augment(key: jax.Array, images: jax.Array, values: dict, cutout_size: int, thickness: int = 0) -> jax.Array:
    """Each of `images` (B, H, W, C) rotated, zoomed and shifted (`augment.draw` with `values`, one bilinear
    resampling), then half the time thickened (`thicken`, when `thickness` > 0), then cut out (`cutout`, when
    `cutout_size` > 0), each example with its own key split from `key`."""
    _, height, width, _ = images.shape

    def one(example_key, image):
        affine_key, cut_key = jax.random.split(example_key)
        image = augment.warp(image, augment.draw(affine_key, values, height, width))
        if thickness:  # its own stream: the affine maps and cutouts stay those drawn without it
            image = thicken(jax.random.fold_in(example_key, 1), image, thickness)
        return cutout(cut_key, image, cutout_size) if cutout_size else image

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images).astype(images.dtype)


class SemiState(classifier.ClassifierState):
    """The classifier's state and `prediction_mean` (K,): the running mean of the network's predicted class
    probabilities on unlabelled images, which distribution alignment divides by (uniform at the start)."""

    prediction_mean: jax.Array | None = None


def align(probabilities, prediction_mean, momentum: float = ALIGNMENT_MOMENTUM):
    """Distribution alignment (Berthelot et al. 2020, ReMixMatch; FixMatch's appendix): each row of `probabilities`
    (U, K) multiplied by (uniform class prior) / (running mean of the model's predictions) and renormalised, so a
    class the model over-predicts loses confidence and one it starves gains it.

    Returns:
      (the aligned (U, K) probabilities, the running mean moved on by this batch: `momentum` * old + (1 -
      `momentum`) * the batch's mean prediction; the batch's own mean is already in the division).
    """
    mean = momentum * prediction_mean + (1.0 - momentum) * jnp.mean(probabilities, 0)
    aligned = probabilities / mean
    return aligned / jnp.sum(aligned, -1, keepdims=True), mean


def unlabelled_loss(student_logits, probabilities, threshold: float):
    """FixMatch's unlabelled term: (loss, mask, pseudo-labels).

    Args:
      student_logits: (U, K) the predictions trained towards the pseudo-labels.
      probabilities: (U, K) the class probabilities the pseudo-labels come from (treated as constants).
      threshold: the max probability a pseudo-label needs.

    Returns:
      The mean over all U images of mask * cross-entropy(student, argmax(probabilities)) (images below the
      threshold count as 0, not left out of the mean), the (U,) float mask, and the (U,) pseudo-labels.
    """
    probabilities = jax.lax.stop_gradient(probabilities)
    pseudo_labels = jnp.argmax(probabilities, -1)
    mask = (jnp.max(probabilities, -1) >= threshold).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(student_logits, pseudo_labels)
    return jnp.mean(losses * mask), mask, pseudo_labels


def unlabelled_weight(step, lambda_u: float, rampup_steps: int):
    """`lambda_u`, ramped linearly from 0 over the first `rampup_steps` optimiser steps (0: no ramp)."""
    if not rampup_steps:
        return jnp.float32(lambda_u)
    return lambda_u * jnp.minimum(1.0, step.astype(jnp.float32) / rampup_steps)


def train_step(state: SemiState, batch, key, *, settings: dict):
    """One optimiser step; `batch` = (images (B (1 + mu), H, W, C), labels, is_labelled): the first B rows are the
    labelled images, the rest the unlabelled ones (whose labels only the pseudo-label accuracy reads).

    `settings` (static; `step_settings`): `method`, `labelled` (B), `weak` and `strong` (augmentations or None),
    `threshold`, `lambda_u`, `rampup_steps`, `align` (distribution alignment of the pseudo-labels' probabilities).
    The key's streams: dropout the key itself, the labelled images' augmentation `fold_in(key, 1)` (as the
    classifier), the unlabelled weak view 2, the strong view 3.
    """
    images, labels, _ = batch
    labelled, method = settings["labelled"], settings["method"]
    weak, strong = settings["weak"], settings["strong"]
    x_labelled, y_labelled = images[:labelled], labels[:labelled]
    x_unlabelled, y_unlabelled = images[labelled:], labels[labelled:]
    targets = None  # FixMatch's pseudo-labels' logits, from the weak view
    if weak is not None:
        x_labelled = weak(jax.random.fold_in(key, 1), x_labelled)
        x_unlabelled = weak(jax.random.fold_in(key, 2), x_unlabelled)
    if method == "fixmatch":
        student = strong(jax.random.fold_in(key, 3), x_unlabelled)
        targets = state.apply_fn(state.variables(), x_unlabelled)  # (U, K), inference mode
        inputs = jnp.concatenate([x_labelled, student])
    elif method == "pseudo_label":
        inputs = jnp.concatenate([x_labelled, x_unlabelled])
    else:
        inputs = x_labelled
    weight = unlabelled_weight(state.step, settings["lambda_u"], settings["rampup_steps"])

    def loss_fn(params):
        logits, model_state = state.train_forward(params, inputs, key)
        supervised_loss = imbalance.cross_entropy(logits[:labelled], y_labelled)
        if method == "supervised":
            return supervised_loss, (logits, model_state, {})
        student_logits = logits[labelled:]
        target_logits = targets if method == "fixmatch" else student_logits  # Lee: the prediction itself
        probabilities = jax.nn.softmax(jax.lax.stop_gradient(target_logits), -1)
        prediction_mean = state.prediction_mean
        if settings["align"]:
            probabilities, prediction_mean = align(probabilities, prediction_mean)
        loss_u, mask, pseudo = unlabelled_loss(student_logits, probabilities, settings["threshold"])
        extra = {"loss": loss_u, "mask": mask, "pseudo": pseudo, "supervised": supervised_loss}
        extra["prediction_mean"] = prediction_mean  # moved on by this batch when aligning, else as it was
        return supervised_loss + weight * loss_u, (logits, model_state, extra)

    (loss, (logits, model_state, extra)), grads = precision.value_and_grad(loss_fn, state.opt_state, has_aux=True)(
        state.params
    )
    state = state.apply_gradients(grads=grads).replace(model_state=model_state)
    metrics = {"train/loss": loss, "train/accuracy": jnp.mean(jnp.argmax(logits[:labelled], -1) == y_labelled)}
    if extra:
        state = state.replace(prediction_mean=extra["prediction_mean"])
        mask = extra["mask"]
        correct = (extra["pseudo"] == y_unlabelled).astype(jnp.float32)
        metrics |= {
            "train/supervised_loss": extra["supervised"],
            "train/unlabelled_loss": extra["loss"],
            "train/mask_rate": jnp.mean(mask),
            "train/pseudo_label_accuracy": jnp.sum(mask * correct) / jnp.maximum(jnp.sum(mask), 1.0),
            "train/unlabelled_weight": weight,
            "train/prediction_mean_max": jnp.max(extra["prediction_mean"]),  # 1 / K when the classes are balanced
        }
    return state, metrics


def make_init(config, model, image_shape, steps_per_epoch: int, num_classes: int):
    """`key -> SemiState` for one seed: the classifier's state (`classifier.make_init`) and a uniform running mean
    of the predictions."""
    init_classifier = classifier.make_init(config, model, image_shape, steps_per_epoch)

    def init(key):
        state = init_classifier(key)
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        return SemiState(**fields, prediction_mean=jnp.full(num_classes, 1.0 / num_classes))

    return init


def step_settings(config, total_steps: int) -> dict:
    """`train_step`'s static settings from the config (a bad `semi_method` is one line)."""
    require(
        config.semi_method in METHODS,
        f"config.semi_method={config.semi_method!r} is not allowed: it must be one of {', '.join(METHODS)}",
    )
    return {
        "method": config.semi_method,
        "labelled": config.batch_size,
        "weak": augment.make(config),
        "strong": make_strong(config),
        "threshold": config.confidence_threshold,
        "lambda_u": config.lambda_u,
        "rampup_steps": int(round(config.lambda_u_rampup * total_steps)),
        "align": config.get("distribution_alignment", False),
    }


def permutations(key: jax.Array, pool: jax.Array, count: int) -> jax.Array:
    """(count,) entries of `pool` (P,): random permutations of it one after another, as many as `count` needs."""
    passes = -(-count // pool.shape[0])
    order = jax.vmap(lambda k: jax.random.permutation(k, pool))(jax.random.split(key, passes))
    return order.reshape(-1)[:count]


def make_sampler(labelled: int, num_labelled: int):
    """`epochs.make_epoch`'s sampler: each batch's first `labelled` indices from the labelled images, the others
    from the unlabelled ones; `data[2]` (N,) bool says which is which (`num_labelled` of them set: static sizes)."""

    def sampler(key, data, num_batches, batch_size):
        is_labelled = data[2]
        labelled_pool = jnp.flatnonzero(is_labelled, size=num_labelled)
        unlabelled_pool = jnp.flatnonzero(~is_labelled, size=is_labelled.shape[0] - num_labelled)
        labelled_key, unlabelled_key = jax.random.split(key)
        first = permutations(labelled_key, labelled_pool, num_batches * labelled).reshape(num_batches, -1)
        rest = permutations(unlabelled_key, unlabelled_pool, num_batches * (batch_size - labelled))
        return jnp.concatenate([first, rest.reshape(num_batches, -1)], axis=1).astype(jnp.int32)

    return sampler


def run(config, workdir: str, data: image_data.ImageData | None = None):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results)."""
    data = data or image_data.load(config.dataset, config.data_dir)
    train_host, chosen = training_set(data, config)
    is_labelled = train_host[2]
    model = classifier.make_model(config, data.num_classes)
    mesh = parallel.mesh_from_config(config)
    train = epochs.to_device(train_host, mesh)
    test_images, test_labels = epochs.to_device((data.test_images, data.test_labels), mesh)
    batch_size = config.batch_size * (1 + config.mu)  # labelled, then unlabelled images
    require(
        batch_size <= len(is_labelled) and len(chosen) < len(is_labelled),
        f"config.batch_size * (1 + config.mu) = {batch_size} images a step, of which {config.batch_size * config.mu} "
        f"unlabelled: the run has {len(is_labelled)} training images, {len(chosen)} of them labelled; lower "
        "config.batch_size, config.mu or config.labels_per_class",
    )
    steps_per_epoch = len(is_labelled) // batch_size
    step = functools.partial(train_step, settings=step_settings(config, config.num_epochs * steps_per_epoch))
    seed_loop = config.get("seed_loop", "vmap")
    sampler = make_sampler(config.batch_size, len(chosen))
    epoch_fn = epochs.make_epoch(step, batch_size, mesh, seed_loop=seed_loop, sampler=sampler)
    evaluate = classifier.make_evaluate(model, seed_loop=seed_loop)
    init_one = make_init(config, model, data.image_shape, steps_per_epoch, data.num_classes)

    def final(state, last_eval):
        variables = state.variables()
        predictions = np.asarray(jnp.argmax(classifier.make_predict(model, seed_loop)(variables, test_images), -1))
        report = classifier.class_report(data.test_labels, predictions, data.num_classes)
        per_seed = {f"test/{k}": v for k, v in report.items() if k != "confusion"}
        per_seed["test/error"] = 1.0 - report["accuracy"]
        per_seed["test/loss"] = np.asarray(last_eval["test/loss"])
        results = run_lib.seed_summary(per_seed) | {"num_seeds": int(config.num_seeds), "num_labelled": len(chosen)}
        if parallel.is_main_process():
            plots = os.path.join(workdir, "plots")
            classifier.report_plots(data, data.test_images, data.test_labels, predictions, report["confusion"], plots)
            plot_examples(config, data, chosen, plots)
        return results

    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *data.image_shape)))  # no arrays
    task = supervised.Task(
        init=epochs.init_seeds(init_one, config.num_seeds, mesh, boxed_params=boxed),
        train_epoch=lambda state, epoch: epoch_fn(state, train),
        evaluate=lambda state: evaluate(state.variables(), test_images, test_labels),
        num_epochs=config.num_epochs,
        final=final,
        params=lambda state: state.variables(),
        plot_keys=("train/accuracy", "train/mask_rate", "train/pseudo_label_accuracy", "test/accuracy"),
        title=f"{config.semi_method} on {data.name}, {len(chosen)} labels",
        examples_per_epoch=steps_per_epoch * batch_size * int(config.num_seeds),
    )
    return supervised.fit(config, workdir, task, desc=f"{config.semi_method} {data.name} {len(chosen)} labels")


def plot_examples(config, data: image_data.ImageData, chosen: np.ndarray, plots: str) -> None:
    """`labelled.png` (the labelled images, a row per class) and `strong_augment.png` (8 of them, each followed by 8
    strongly augmented copies)."""
    order = chosen[np.argsort(data.train_labels[chosen], kind="stable")]  # class by class, `labels_per_class` each
    plotting.image_grid(
        data.train_images[order],
        os.path.join(plots, "labelled.png"),
        nrow=config.labels_per_class,
        title=f"the {len(order)} labelled {data.name} training images (seed {config.seed})",
        row_labels=[f"class {c}" for c in range(data.num_classes)],
    )
    originals = jnp.asarray(data.train_images[order[:: max(1, len(order) // 8)][:8]])
    copies = jnp.repeat(originals, 8, axis=0)  # (8 x 8, H, W, C): original i's copies are rows 8i..8i+7
    augmented = np.asarray(jax.jit(make_strong(config))(jax.random.PRNGKey(config.seed), copies))
    augmented = augmented.reshape(len(originals), 8, *data.image_shape)
    rows = np.concatenate([np.asarray(originals)[:, None], augmented], axis=1).reshape(-1, *data.image_shape)
    on = f"rotate={config.strong_rotate}, scale={config.strong_scale}, shift={config.strong_shift}"
    on += f", thickness={config.get('strong_thickness', 0)}"
    plotting.image_grid(
        rows,
        os.path.join(plots, "strong_augment.png"),
        nrow=9,
        title=f"strong augmentation: {on}, cutout={config.strong_cutout}\nin each row the original, then 8 copies",
    )


@registry.register("semi_supervised")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]
