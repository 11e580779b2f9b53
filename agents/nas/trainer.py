"""The `nas` trainer: a search (or several, side by side) over the CNN space, then the best network retrained.

    python -m scripts.train --config=agents/configs/nas.py --workdir=runs/nas_digits
    python -m scripts.train --config=agents/configs/nas.py:compare,small --workdir=runs/nas_compare

One epoch of the run scaffold (`lepton_jax.supervised.fit`: resume, progress, metrics, results.json) is one search
step: every search of every method in `config.search` (`num_seeds` independent searches each) proposes
`children_per_step` architectures; the children are trained together (`agents.nas.children`, one compiled step for
all the children of a method) for `child_epochs` on the training images less the last `val_fraction`, and their
accuracies on those held-out images are the rewards the searches are told. After `num_epochs` steps, each
search's best child (by validation accuracy) is trained afresh for `retrain_epochs` on all the training images
(train + validation) and tested.

With one method results.json has `test/accuracy` (the retrained best networks, `_mean`/`_std`/`per_seed/` over the
searches), `search/best_val_accuracy`, `search/children_evaluated` (per search), `search/distinct_architectures`,
`search/best_num_params`, `search/best_architecture` (the best search's, as text, and `per_seed/...` each
search's); with several (`config.search=controller,random,evolution`) each method's entries are prefixed with
`<method>/`. `plots/search_curve.png` draws the best validation accuracy so far against the children evaluated,
one line per method (mean ± std over the searches). The metrics per step: `train/best_val_accuracy` after
`train/children_evaluated` children, `train/val_accuracy` (the mean of the step's children),
`train/child_cross_entropy` (their mean training loss in their last epoch; a child that diverges counts in
`train/diverged_children` and earns a low reward, the run goes on), and the controller's `train/controller_loss`,
`train/entropy`, `train/baseline` (each suffixed `/<method>` with several methods).
"""

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from agents.nas import children, search
from agents.nas import space as space_lib
from lepton_jax import metrics as metrics_lib
from lepton_jax import parallel, plotting, registry, seeds, supervised
from lepton_jax import run as run_lib
from lepton_jax.techniques import early_stopping
from lepton_jax.vision import data as image_data


@struct.dataclass
class SearchRun:
    """One method's searches, a leading seed axis on every leaf."""

    history: search.History
    extra: Any  # the method's own state (the controller's; {} for the others)
    rng: jax.Array


def methods_of(config) -> tuple[str, ...]:
    """The methods `config.search` names (comma-separated), in its order."""
    return tuple(m.strip() for m in config.search.split(",") if m.strip())


def space_of(config) -> space_lib.SearchSpace:
    return space_lib.check_space(config.max_layers, config.filter_choices, config.kernel_choices)


class Splits(NamedTuple):
    """The images each phase uses, on the devices: `(images, labels)` pairs."""

    search_train: tuple  # the children's training images
    val: tuple  # their reward: the last `val_fraction` of the training set
    full_train: tuple  # the retrained networks': the whole training set
    test: tuple


def make_splits(config, data: image_data.ImageData, place) -> Splits:
    """The splits of `data`, each put on the devices by `place`."""
    count = data.train_images.shape[0]
    held = early_stopping.holdout(count, config.val_fraction)
    used = count - held if not config.child_examples else min(config.child_examples, count - held)
    put = lambda x, y: place((x, y))  # noqa: E731
    return Splits(
        put(data.train_images[:used], data.train_labels[:used]),
        put(data.train_images[count - held :], data.train_labels[count - held :]),
        put(data.train_images, data.train_labels),
        put(data.test_images, data.test_labels),
    )


def make_task(config, workdir: str) -> supervised.Task:
    space = space_of(config)
    methods = methods_of(config)
    data = image_data.load(config.dataset, config.data_dir)
    trainer = children.make_child_trainer(
        space,
        data.num_classes,
        data.image_shape,
        config.batch_size,
        config.child_lr,
        config.seed_loop,
        config.precision,
    )
    splits = make_splits(config, data, trainer.place)
    num_seeds, per_step, steps = int(config.num_seeds), int(config.children_per_step), int(config.num_epochs)
    suffix = {m: "" if len(methods) == 1 else f"/{m}" for m in methods}
    prefix = {m: "" if len(methods) == 1 else f"{m}/" for m in methods}
    built = {m: search.make_method(m, config, space, steps) for m in methods}

    def init(key):
        def one(method, k):
            extra_key, rng = jax.random.split(k)
            history = search.History.create(steps * per_step, space.length)
            return SearchRun(history, built[method].init(extra_key), rng)

        keys = jax.random.split(key, len(methods))
        runs = {
            m: jax.vmap(lambda k, m=m: one(m, k))(jax.random.split(keys[i], num_seeds)) for i, m in enumerate(methods)
        }
        # Placed as a search step leaves them (replicated on the children's mesh; `History` is created without weak
        # types), so that each method's propose and observe compile once, not again at the second step.
        return jax.device_put(runs, parallel.replicated(parallel.make_mesh()))

    def make_propose(method):
        def one(run: SearchRun):
            rng, propose_key, child_key = jax.random.split(run.rng, 3)
            archs = built[method].propose(run.extra, run.history, propose_key)
            return run.replace(rng=rng), archs, jax.random.split(child_key, per_step)

        return jax.jit(jax.vmap(one))

    def make_observe(method):
        def one(run: SearchRun, archs, rewards):
            extra, metrics = built[method].observe(run.extra, archs, rewards)
            return run.replace(history=run.history.record(archs, rewards), extra=extra), metrics

        return jax.jit(jax.vmap(one))

    propose = {m: make_propose(m) for m in methods}
    observe = {m: make_observe(m) for m in methods}

    # A child's result depends on its architecture and key alone, so how the children are grouped into calls is a
    # matter of speed: all the searches' children of a method at once (one batched program), or on a CPU, where they
    # are unrolled (`seed_loop`), one search's at a time (compiling S x N unrolled copies takes minutes).
    per_call = per_step if seeds.resolve(config.seed_loop) == "unroll" else num_seeds * per_step

    def train_children(archs, keys, train_data, eval_data, epochs):
        """(M,) accuracies and losses of the children `archs` (M, D), in calls of `per_call` children."""
        out = [
            trainer.train(archs[i : i + per_call], keys[i : i + per_call], train_data, eval_data, epochs)
            for i in range(0, archs.shape[0], per_call)
        ]
        return tuple(jnp.concatenate(parts) for parts in zip(*out))

    def train_epoch(state, epoch):
        del epoch  # everything the step needs is in the state
        state, metrics = dict(state), {}
        for m in methods:
            run, archs, keys = propose[m](state[m])  # (S, N, D), (S, N, 2)
            flat = lambda x: x.reshape(num_seeds * per_step, *x.shape[2:])  # noqa: E731
            rewards, losses = train_children(
                flat(archs), flat(keys), splits.search_train, splits.val, config.child_epochs
            )
            rewards = rewards.reshape(num_seeds, per_step)
            losses = losses.reshape(num_seeds, per_step)
            diverged = ~jnp.isfinite(losses)
            state[m], method_metrics = observe[m](run, archs, rewards)
            step_metrics = {
                "train/best_val_accuracy": state[m].history.best_reward,
                "train/children_evaluated": state[m].history.count,
                "train/val_accuracy": rewards.mean(1),
                # A child that diverged is a bad architecture (its reward is low), not a failed run: the mean is over
                # the finite ones, named so that the scaffold's NaN guard (on `*loss*`) watches the controller only.
                "train/child_cross_entropy": jnp.nanmean(jnp.where(diverged, jnp.nan, losses), 1),
                "train/diverged_children": diverged.sum(1),
                **method_metrics,
            }
            metrics.update({name + suffix[m]: value for name, value in step_metrics.items()})
        return state, metrics

    def evaluate(state):
        return {"val/best_accuracy" + suffix[m]: state[m].history.best_reward for m in methods}

    def final(state, last_eval):
        del last_eval
        results = {"search/methods": list(methods), "search/space_size": space.num_architectures()}
        for m in methods:
            run = jax.device_get(state[m])
            best = jnp.asarray(run.history.best_arch)  # (S, D)
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(state[m].rng)
            test, _ = train_children(best, keys, splits.full_train, splits.test, config.retrain_epochs)
            archs = [space_lib.decode(space, a) for a in run.history.best_arch]
            distinct = [len(np.unique(h, axis=0)) for h in run.history.archs]
            per_seed = {
                "test/accuracy": test,
                "search/best_val_accuracy": run.history.best_reward,
                "search/distinct_architectures": distinct,
                "search/best_num_params": [space_lib.num_params(a, data.num_classes) for a in archs],
            }
            entries = run_lib.seed_summary(per_seed)
            texts = [space_lib.describe(a) for a in archs]
            entries["search/children_evaluated"] = steps * per_step
            entries["search/best_architecture"] = texts[int(np.argmax(run.history.best_reward))]
            entries["per_seed/search/best_architecture"] = texts
            results.update({prefix[m] + name: value for name, value in entries.items()})
        if parallel.is_main_process():
            plot_search_curve(workdir, methods, per_step, suffix)
        return results

    return supervised.Task(
        init=init,
        train_epoch=train_epoch,
        evaluate=evaluate,
        num_epochs=steps,
        final=final,
        plot_keys=tuple("train/best_val_accuracy" + suffix[m] for m in methods),
        title="best validation accuracy so far, per search step",
        examples_per_epoch=len(methods) * num_seeds * per_step * splits.search_train[0].shape[0] * config.child_epochs,
    )


def plot_search_curve(workdir: str, methods, per_step: int, suffix: dict) -> None:
    """`plots/search_curve.png`: the best validation accuracy so far against the children each search evaluated."""
    records = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    keys = ["train/best_val_accuracy" + suffix[m] for m in methods]
    # The x axis in children: the records' step is the search step (epoch).
    records = [dict(r, step=r["step"] * per_step) for r in records]
    path = os.path.join(workdir, "plots", "search_curve.png")
    plotting.curves(
        records,
        keys,
        path,
        xlabel="children evaluated (per search)",
        ylabel="best validation accuracy (mean ± std over searches)",
        title="architecture search",
        labels=list(methods),
    )


@registry.register("nas")
def train_and_evaluate(config, workdir: str) -> dict:
    """Runs the searches of `config.search` for `config.num_seeds` seeds each, retrains their best networks, and
    writes results.json."""
    task = make_task(config, workdir)
    return supervised.fit(config, workdir, task, desc=f"nas {config.search} {config.dataset}")[1]
