"""SimCLR (Chen et al. 2020): contrastive pretraining of the image classifier's CNN trunk, without labels.

    python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:mnist --config.num_seeds=3
    python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:digits   # no files needed, seconds

Each training image is augmented twice (the toolbox's affine augmentation, `lepton_jax/techniques/augment.py`, then
random erasing and Gaussian noise, below); the classifier's CNN trunk (`classifier.CNN.features`, the 256 ReLU
features) and a projection MLP map both views to `projection_dim` vectors, and the NT-Xent loss pulls each pair
together against the other 2B - 2 views of the batch (`contrastive_loss`). The labels are never used in training.

The trunk's variables sit at the top level under the classifier's own names (`conv0`, `conv1`, `dense`), the
projection under `projection_hidden` and `projection_out`: the workdir is an `init_from` for the classifier, which
copies the trunk and trains its own head (`--config.freeze_trunk=True`: a linear probe through the classifier).

After training, the frozen trunk's features (not the projection) of every training and test image are evaluated
for each seed, and the same for the seed's randomly initialised encoder (its state before the first step):

- `test/linear_probe_accuracy`: multinomial logistic regression on the standardised training features (`probe_l2`
  L2, `probe_steps` L-BFGS iterations, jitted), scored on the test features;
- `test/knn_accuracy`: `knn_k` nearest training features (cosine: L2-normalised) vote (`cluster.knn_classify`);
- `test/kmeans_accuracy`, `test/kmeans_nmi`: k-means++ K-means of the L2-normalised test features into as many
  clusters as classes, scored with the Hungarian matching and the NMI (`cluster.cluster_accuracy`,
  `cluster.normalized_mutual_info`);
- `random/...`: the same four for the random encoders.

Each per seed (`_mean`, `_std`, `per_seed/`). During training `eval/loss` and `eval/pair_accuracy` (the share of
views whose nearest other view is their pair) are measured on fixed views of the first `EVAL_VIEWS` test images,
and `eval/knn_accuracy` on the first `KNN_MONITOR` training and test images. `plots/` has the learning curves,
`embedding.png` (the test features' first two principal components, coloured by class, random encoder and trained,
seed 0) and `views.png` (training images and their augmented views).
"""

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import traverse_util

from lepton_jax import checkpoint, epochs, parallel, plotting, registry, seeds, supervised
from lepton_jax import run as run_lib
from lepton_jax.config import read_json, require
from lepton_jax.errors import UserError
from lepton_jax.techniques import augment, cluster, precision
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data

EVAL_VIEWS = 1024  # test images whose fixed pair of views gives eval/loss each evaluation
KNN_MONITOR = (10_000, 2_000)  # (training, test) images of the kNN accuracy monitored during training
ERASE_AREA = (0.02, 0.33)  # random erasing's share of the image, and its aspect ratio (torchvision's defaults)
ERASE_ASPECT = (0.3, 3.3)


class SimCLRNet(nn.Module):
    """The classifier's CNN trunk and a projection MLP: `features` (B, hidden), `__call__` (B, projection_dim)."""

    trunk: classifier.CNN
    projection_hidden: int = 256
    projection_dim: int = 64

    def setup(self):
        # The trunk's variables in this module's scope, under the classifier's names: a SimCLR checkpoint is a
        # classifier's `init_from` as it is.
        nn.share_scope(self, self.trunk)
        # Row-split after the trunk's column-split dense layer (one all-reduce on a `model` axis; plain otherwise).
        self.projection_hidden_layer = parallel.dense(self.projection_hidden, "row", name="projection_hidden")
        self.projection_out = nn.Dense(self.projection_dim, name="projection_out")

    def features(self, x, train: bool = False):
        return self.trunk.features(x, train)

    def __call__(self, x, train: bool = False):
        return self.projection_out(nn.relu(self.projection_hidden_layer(self.features(x, train))))


def make_model(config):
    """The network `config` describes, computing in `config.precision`'s type."""
    net = SimCLRNet(classifier.make_cnn(config), config.projection_hidden, config.projection_dim)
    return precision.module(net, config)


# ---- Views ------------------------------------------------------------------------------------------------------


def erase(key: jax.Array, image: jax.Array) -> jax.Array:
    """`image` (H, W, C) with a random rectangle set to 0: its area a uniform share `ERASE_AREA` of the image's,
    its aspect ratio log-uniform in `ERASE_ASPECT`, its position uniform (Zhong et al. 2020, as torchvision's
    `RandomErasing`, which retries a box that does not fit where this one is cut to the image)."""
    height, width = image.shape[:2]
    area_key, aspect_key, row_key, col_key = jax.random.split(key, 4)
    area = jax.random.uniform(area_key, (), minval=ERASE_AREA[0], maxval=ERASE_AREA[1]) * height * width
    aspect = jnp.exp(jax.random.uniform(aspect_key, (), minval=np.log(ERASE_ASPECT[0]), maxval=np.log(ERASE_ASPECT[1])))
    rows = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, height)
    cols = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, width)
    top = jnp.floor(jax.random.uniform(row_key, ()) * (height - rows + 1))
    left = jnp.floor(jax.random.uniform(col_key, ()) * (width - cols + 1))
    r, c = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    box = (r >= top) & (r < top + rows) & (c >= left) & (c < left + cols)  # (H, W)
    return jnp.where(box[..., None], 0.0, image)


def make_views(config) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`view_fn(key, images (B, H, W, C)) -> images`: one random view of each image, drawn as `augment.make` draws
    (each example from its own key split from `key`): the affine augmentation `config.augment_*` asks for, then with
    probability `erase_prob` random erasing (`erase`), then Gaussian noise of std `noise_std`, clipped to [0, 1]."""
    affine = augment.make(config)
    erase_prob, noise_std = config.erase_prob, config.noise_std

    def one(key, image):  # (H, W, C) float32
        on_key, erase_key, noise_key = jax.random.split(key, 3)
        if erase_prob > 0:
            image = jnp.where(jax.random.bernoulli(on_key, erase_prob), erase(erase_key, image), image)
        if noise_std > 0:
            image = jnp.clip(image + noise_std * jax.random.normal(noise_key, image.shape), 0.0, 1.0)
        return image

    def view_fn(key, images):
        affine_key, extra_key = jax.random.split(key)
        if affine is not None:
            images = affine(affine_key, images)
        return jax.vmap(one)(jax.random.split(extra_key, images.shape[0]), images).astype(images.dtype)

    return view_fn


def two_views(view_fn, key: jax.Array, images: jax.Array) -> jax.Array:
    """(2B, H, W, C): the first views of `images` (B, ...), then the second, each from its own stream of `key`."""
    return jnp.concatenate([view_fn(jax.random.fold_in(key, 1), images), view_fn(jax.random.fold_in(key, 2), images)])


# ---- Loss and training ------------------------------------------------------------------------------------------


def contrastive_loss(projections: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """NT-Xent of (2B, D) projections whose rows i and i + B are the views of one image.

    For each view i with pair p(i): -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)), s the cosine similarity,
    averaged over the 2B views (`optax.losses.ntxent` with the pairs as its labels; its default temperature, 0.07,
    is never used).

    Returns:
      (loss, pair accuracy: the share of views whose most similar other view is their pair).
    """
    views = projections.shape[0] // 2
    pairs = jnp.tile(jnp.arange(views), 2)  # (2B,) one label per image
    loss = optax.losses.ntxent(projections, pairs, temperature)
    unit = projections / jnp.maximum(jnp.linalg.norm(projections, axis=1, keepdims=True), 1e-12)
    similarity = jnp.where(jnp.eye(2 * views, dtype=bool), -jnp.inf, unit @ unit.T)  # (2B, 2B), self excluded
    partner = jnp.concatenate([jnp.arange(views, 2 * views), jnp.arange(views)])
    return loss, jnp.mean(jnp.argmax(similarity, 1) == partner)


def train_step(state: classifier.ClassifierState, batch, key, view_fn, temperature: float):
    """One optimiser step on the NT-Xent loss of two views of `batch` = (images (B, H, W, C),); `key` drives the
    views (its streams 1 and 2) and dropout (the key itself)."""
    (images,) = batch
    views = two_views(view_fn, key, images)

    def loss_fn(params):
        projections, model_state = state.train_forward(params, views, key)
        loss, accuracy = contrastive_loss(projections, temperature)
        return loss, (accuracy, model_state)

    (loss, (accuracy, model_state)), grads = precision.value_and_grad(loss_fn, state.opt_state, has_aux=True)(
        state.params
    )
    state = state.apply_gradients(grads=grads).replace(model_state=model_state)
    return state, {"train/loss": loss, "train/pair_accuracy": accuracy}


def make_embed(model, seed_loop: str = "vmap"):
    """Jitted `(variables with a seed axis, images (N, H, W, C)) -> features (seeds, N, hidden)`: the trunk in
    inference mode, in chunks of `classifier.EVAL_CHUNK` images."""

    def one_seed(variables, images):
        features = lambda x: model.apply(variables, x, method=SimCLRNet.features)  # noqa: E731
        return epochs.map_in_chunks(features, images, classifier.EVAL_CHUNK)

    return jax.jit(seeds.over_seeds(one_seed, (0, None), seed_loop))


# ---- Evaluation of frozen features ------------------------------------------------------------------------------


def unit_rows(features) -> jax.Array:
    """Each row scaled to length 1 (a zero row stays 0): Euclidean distances become cosine ones."""
    features = jnp.asarray(features, jnp.float32)
    return features / jnp.maximum(jnp.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _probe(train_x, train_y, test_x, l2, num_classes: int, steps: int):
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6  # a dead ReLU unit (std 0) stays 0
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    params = (jnp.zeros((train_x.shape[1], num_classes)), jnp.zeros(num_classes))

    def objective(params):
        weights, bias = params
        logits = train_x @ weights + bias
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean() + 0.5 * l2 * jnp.sum(weights**2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
        params, opt_state = carry
        value, grad = value_and_grad(params, state=opt_state)
        updates, opt_state = solver.update(grad, opt_state, params, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, length=steps)
    return jnp.argmax(test_x @ params[0] + params[1], -1)


def linear_probe(train_x, train_y, test_x, num_classes: int, steps: int = 300, l2: float = 1e-4) -> np.ndarray:
    """The test predictions (Q,) of a multinomial logistic regression fitted to (N, F) training features.

    The features are standardised with the training set's mean and std; the objective is the mean cross-entropy
    plus `l2 / 2 |W|^2` (the bias free), minimised from zero by `steps` L-BFGS iterations (optax, zoom line search),
    all in one jitted program.
    """
    train_y = jnp.asarray(train_y, jnp.int32)
    predictions = _probe(jnp.asarray(train_x), train_y, jnp.asarray(test_x), jnp.float32(l2), num_classes, steps)
    return np.asarray(predictions)


def kmeans_scores(points, labels, num_clusters: int, key: jax.Array) -> tuple[float, float]:
    """(Hungarian accuracy, NMI) against `labels` of a k-means++ K-means of `points` (N, D) into `num_clusters`."""
    fit = cluster.kmeans(points, num_clusters, key)
    assigned = np.asarray(fit.labels)
    return cluster.cluster_accuracy(labels, assigned), cluster.normalized_mutual_info(labels, assigned)


def cluster_key(seed: int, index: int) -> jax.Array:
    """The k-means++ key of seed `index` of a run with `config.seed` = `seed` (shared with the kmeans trainer)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + 7919), index)


def evaluate_features(train_x, train_y, test_x, test_y, num_classes: int, config, key: jax.Array) -> dict:
    """One encoder's scores (`linear_probe_accuracy`, `knn_accuracy`, `kmeans_accuracy`, `kmeans_nmi`) from its
    training features (N, F) and test features (Q, F); `key` seeds the k-means++ draw."""
    probe = linear_probe(train_x, train_y, test_x, num_classes, config.probe_steps, config.probe_l2)
    train_unit, test_unit = unit_rows(train_x), unit_rows(test_x)
    knn = cluster.knn_classify(train_unit, train_y, test_unit, config.knn_k, num_classes=num_classes)
    kmeans_accuracy, nmi = kmeans_scores(test_unit, test_y, num_classes, key)
    return {
        "linear_probe_accuracy": float(np.mean(probe == test_y)),
        "knn_accuracy": float(np.mean(np.asarray(knn.predictions) == test_y)),
        "kmeans_accuracy": kmeans_accuracy,
        "kmeans_nmi": nmi,
    }


def principal_components(features, count: int = 2) -> np.ndarray:
    """(N, count): `features` (N, F) projected on their first `count` principal axes."""
    centred = np.asarray(features, np.float64) - np.mean(features, 0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:count].T


def plot_embedding(panels: dict, labels: np.ndarray, path: str, title: str) -> None:
    """One scatter per entry of `panels` ({name: features (N, F)}): the first two principal components, coloured
    by class."""
    plt = plotting.pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4.6), dpi=110, squeeze=False, layout="constrained"
    )
    for ax, (name, features) in zip(axes[0], panels.items()):
        points = principal_components(features)
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("principal component 1")
        ax.set_ylabel("principal component 2")
    fig.colorbar(scatter, ax=axes[0].tolist(), ticks=range(10), label="class")
    fig.suptitle(title, fontsize=10)
    plotting.save(fig, path, tight=False)


# ---- The trainer ------------------------------------------------------------------------------------------------


def run(config, workdir: str, data: image_data.ImageData | None = None):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results)."""
    data = data or image_data.load(config.dataset, config.data_dir)
    count = config.train_examples or len(data.train_images)
    require(
        count <= len(data.train_images),
        f"config.train_examples={count} is more than the {len(data.train_images)} training images of {data.name}",
    )
    train_images, train_labels = data.train_images[:count], data.train_labels[:count]  # labels: evaluation only
    model = make_model(config)
    mesh = parallel.mesh_from_config(config)
    seed_loop = config.seed_loop
    view_fn = make_views(config)
    step = functools.partial(train_step, view_fn=view_fn, temperature=config.temperature)
    epoch_fn = epochs.make_epoch(step, config.batch_size, mesh, seed_loop=seed_loop)
    train = epochs.to_device((train_images,), mesh)
    init_one = classifier.make_init(config, model, data.image_shape, count // config.batch_size)
    embed = make_embed(model, seed_loop)

    eval_images = jnp.asarray(data.test_images[:EVAL_VIEWS])
    eval_views = jax.jit(functools.partial(two_views, view_fn))(jax.random.PRNGKey(0), eval_images)  # fixed

    def eval_one(variables, views):
        return contrastive_loss(model.apply(variables, views), config.temperature)

    eval_pairs = jax.jit(seeds.over_seeds(eval_one, (0, None), seed_loop))
    monitor_train = jnp.asarray(train_images[: KNN_MONITOR[0]]), train_labels[: KNN_MONITOR[0]]
    monitor_test = jnp.asarray(data.test_images[: KNN_MONITOR[1]]), data.test_labels[: KNN_MONITOR[1]]
    monitor_k, classes = min(config.knn_k, len(monitor_train[1])), data.num_classes

    def evaluate(state):
        variables = state.variables()
        loss, accuracy = eval_pairs(variables, eval_views)
        train_x = jax.vmap(unit_rows)(embed(variables, monitor_train[0]))  # (seeds, N, F)
        test_x = jax.vmap(unit_rows)(embed(variables, monitor_test[0]))
        knn = []
        for seed_train, seed_test in zip(train_x, test_x):
            fit = cluster.knn_classify(seed_train, monitor_train[1], seed_test, monitor_k, num_classes=classes)
            knn.append(np.mean(np.asarray(fit.predictions) == monitor_test[1]))
        return {"eval/loss": loss, "eval/pair_accuracy": accuracy, "eval/knn_accuracy": np.asarray(knn)}

    init = epochs.init_seeds(
        init_one, config.num_seeds, mesh, boxed_params=jax.eval_shape(model.init, jax.random.PRNGKey(0), eval_images)
    )

    def final(state, last_eval):
        per_seed = {}
        encoders = {"test": state.variables(), "random": init(jax.random.PRNGKey(config.seed)).variables()}
        features = {}
        for prefix, variables in encoders.items():
            train_x, test_x = np.asarray(embed(variables, train_images)), np.asarray(embed(variables, data.test_images))
            features[prefix] = test_x[0]
            scores = [
                evaluate_features(a, train_labels, b, data.test_labels, classes, config, cluster_key(config.seed, i))
                for i, (a, b) in enumerate(zip(train_x, test_x))
            ]
            per_seed |= {f"{prefix}/{name}": np.array([s[name] for s in scores]) for name in scores[0]}
        if parallel.is_main_process():
            plots = os.path.join(workdir, "plots")
            panels = {"random encoder (initial)": features["random"], "SimCLR encoder": features["test"]}
            title = f"{data.name} test features, first two principal components (seed 0)"
            plot_embedding(panels, data.test_labels, os.path.join(plots, "embedding.png"), title)
            plot_views(view_fn, train_images[:8], jax.random.PRNGKey(config.seed), os.path.join(plots, "views.png"))
        return run_lib.seed_summary(per_seed) | {"num_seeds": int(config.num_seeds)}

    task = supervised.Task(
        init=init,
        train_epoch=lambda state, epoch: epoch_fn(state, train),
        evaluate=evaluate,
        num_epochs=config.num_epochs,
        final=final,
        params=lambda state: state.variables(),
        plot_keys=("train/pair_accuracy", "eval/pair_accuracy", "eval/knn_accuracy"),
        title=f"SimCLR on {data.name}",
        examples_per_epoch=(count // config.batch_size) * config.batch_size * int(config.num_seeds),
    )
    return supervised.fit(config, workdir, task, desc=f"simclr {data.name}")


def plot_views(view_fn, images: np.ndarray, key: jax.Array, path: str, versions: int = 8) -> None:
    """A PNG of `images` (N, H, W, C), each row an image and `versions` random views of it."""
    copies = jnp.repeat(jnp.asarray(images), versions, axis=0)
    views = np.asarray(jax.jit(view_fn)(key, copies)).reshape(len(images), versions, *images.shape[1:])
    rows = np.concatenate([images[:, None], views], axis=1).reshape(-1, *images.shape[1:])
    plotting.image_grid(rows, path, nrow=1 + versions, title="in each row a training image, then views of it")


@registry.register("simclr")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]


# ---- A finished run's encoder, for other trainers ---------------------------------------------------------------


def load_encoder(workdir: str, image_shape, where: str = "config.features_from"):
    """The model and trunk variables (every seed: a leading seed axis) of the finished SimCLR run in `workdir`.

    Args:
      workdir: the run's directory.
      image_shape: (H, W, C) of the images the encoder will see (must be those it was trained on).
      where: the setting that named `workdir`, at the start of every error.

    Returns:
      (model, variables, the run's config as a dict).

    Raises:
      UserError: one line, for a path that is not a finished SimCLR run, an unreadable checkpoint, or an encoder
        trained on images of another shape.
    """
    import ml_collections
    import orbax.checkpoint as ocp

    def refuse(problem: str) -> UserError:
        how = "train one with python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:mnist"
        return UserError(f"{where}={workdir} {problem}; point it at a finished SimCLR run ({how})")

    if not os.path.isdir(workdir):
        raise refuse("is not a directory" if os.path.lexists(workdir) else "does not exist")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise refuse("holds no config.json, so no run")
    stored = read_json(os.path.join(workdir, "config.json"), f"the config of the run in {where}")
    if stored.get("trainer") != "simclr":
        raise refuse(f"holds a '{stored.get('trainer')}' run, not a simclr one")
    if not os.path.isfile(os.path.join(workdir, "results.json")):
        raise refuse("holds an unfinished SimCLR run (no results.json: run its command again to finish it)")
    steps = checkpoint.saved_steps(workdir)
    if not steps:
        raise refuse("has no checkpoint")
    config = ml_collections.ConfigDict(stored)
    model = make_model(config)
    try:  # read only: the other run's files are never changed
        state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(steps[-1]), "state"))
        variables = {**state["params"], **(state.get("model_state") or {})}
    except Exception as error:  # noqa: BLE001 - any failure to read is the user's file to fix
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise refuse(f"has a checkpoint ({steps[-1]}) that cannot be read ({first})") from None
    expected = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *image_shape))))
    have = {k: tuple(v.shape[1:]) for k, v in traverse_util.flatten_dict(variables).items()}
    for path, leaf in traverse_util.flatten_dict(expected).items():
        if have.get(path) != tuple(leaf.shape):
            raise refuse(
                f"holds an encoder of {stored.get('dataset')} images that does not fit {tuple(image_shape)} images "
                f"({'/'.join(path)}: {have.get(path)} there, {tuple(leaf.shape)} here)"
            )
    return model, jax.tree.map(jnp.asarray, variables), stored
