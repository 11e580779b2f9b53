"""A classifier's workdir as a cache of one trained classifier, keyed by its config (the generative models' FID/KID
feature classifier, distillation teachers).

`load_trained` restores a finished run's parameters for reuse, and `ensure_trained` trains one first when there is
none. `default_workdir` puts the hash of the config in the directory's name (`runs/classifier-<dataset>-<hash8>`, the
launcher's own default for that config, so `python -m scripts.train --config=lepton_jax/vision/configs/classifier.py:
mnist` trains the classifier where the generative models look for it); `check_workdir` refuses a workdir whose
config.json differs (a smoke classifier never stands in for a full one, nor the other way round), resumes one without
results.json (an interrupted or failed run is never used as finished), and says what is wrong with a path that is a
file or cannot be written, each in one line naming the caller's flag, before anything is trained.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from lepton_jax import checkpoint, epochs, parallel, seeds
from lepton_jax.config import TECHNIQUES, to_dict
from lepton_jax.errors import UserError
from lepton_jax.metrics import TrainingDiverged
from lepton_jax.vision import data as image_data
from lepton_jax.vision.classifier import CNN, make_init, make_model, run

# Config keys that do not make another classifier: where the data lives (the same dataset read from another path is
# the same classifier, and a resumed run keeps the path it was started with).
UNKEYED = ("data_dir",)


def config_key(config) -> dict:
    """The classifier's config as the cache compares it: all its keys but `UNKEYED` and the toolbox's technique keys
    at their off values (`lepton_jax.config.TECHNIQUES`), so that a run saved before a technique existed still
    matches a config that leaves it off (as the launcher's own resume check does)."""
    off = {name: value for group in TECHNIQUES.values() for name, value in group.items()}
    return {k: v for k, v in to_dict(config).items() if k not in UNKEYED and not (k in off and v == off[k])}


def config_hash(config) -> str:
    """8 hex digits of the config's sha256, `UNKEYED` keys at their defaults (None): the hash the launcher puts in
    its default workdir (`scripts/train.py`), so a classifier trained there without `--workdir` is found too."""
    keyed = to_dict(config) | {k: None for k in UNKEYED}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]


def default_workdir(config) -> str:
    """`runs/classifier-<dataset>-<config hash>`: one directory per classifier config."""
    return os.path.join("runs", f"classifier-{config.dataset}-{config_hash(config)}")


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _writable(directory: str) -> str | None:
    """None if a file can be created in `directory`, else why not (a real attempt: root ignores permission bits,
    and a read-only mount or /proc refuses whatever they say)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def check_workdir(config, workdir: str, flag: str = "--workdir", alternatives: Sequence[tuple[str, Any]] = ()) -> str:
    """Whether `workdir` can give (or receive) the classifier `config` describes; reads files, trains nothing.

    Args:
      config: the classifier config the caller needs.
      workdir: where that classifier is (to be) trained.
      flag: the flag that sets `workdir`, named in every error.
      alternatives: `(setting, config)` pairs of the other classifiers the caller could ask for (e.g.
        `("--config.smoke_classifier=True", smoke config)`): when `workdir` holds one of them, the error says which
        setting would use it.

    Returns:
      "finished" (config.json of this config, results.json and a checkpoint: reused), "partial" (config.json of this
      config but no results.json: an interrupted or failed run, resumed from its newest intact checkpoint) or "new"
      (missing or empty: trained there).

    Raises:
      UserError: one line naming `flag`, for a path that is not a directory or cannot be written where training is
        needed, a directory that is not a classifier run, a run of another config, a finished run without a checkpoint.
    """

    def refuse(problem: str) -> UserError:
        return UserError(f"{flag}={workdir} {problem}")

    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        what = "a file" if os.path.isfile(workdir) else "a broken link or a special file"
        raise refuse(f"is {what}, not a directory; point {flag} at a classifier run or a new directory")
    if not os.path.isdir(workdir):
        parent = _nearest_existing(workdir)
        if not os.path.isdir(parent):
            raise refuse(f"cannot be created: {parent} is not a directory; point {flag} elsewhere")
        reason = _writable(parent)
        if reason:
            raise refuse(f"cannot be created in {parent} ({reason}); point {flag} at a writable directory")
        return "new"
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        if os.listdir(workdir):
            raise refuse(f"holds no config.json, so no classifier run; point {flag} at one or at a new directory")
        reason = _writable(workdir)
        if reason:
            raise refuse(f"is not writable ({reason}); point {flag} at a writable directory")
        return "new"
    try:
        with open(config_path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as error:
        raise refuse(f"has an unreadable config.json ({error}); point {flag} at a classifier run") from None
    stored = config_key(ml_collections.ConfigDict(stored)) if isinstance(stored, dict) else {}
    needed = config_key(config)
    changed = sorted(k for k in set(stored) | set(needed) if stored.get(k) != needed.get(k))
    if changed:
        other = next((setting for setting, alt in alternatives if config_key(alt) == stored), None)
        held = f"the classifier of {other}" if other else "a classifier of another config"
        fix = f"pass {other} to use it, or point {flag} elsewhere" if other else f"point {flag} elsewhere"
        unset = f" (unset, it is {default_workdir(config)})"
        raise refuse(f"holds {held} (changed: {', '.join(changed)}); {fix}{unset}")
    if os.path.isfile(os.path.join(workdir, "results.json")):
        if not checkpoint.saved_steps(workdir):
            raise refuse(
                f"has results.json but no checkpoint to restore; delete its results.json to retrain there, or point "
                f"{flag} elsewhere"
            )
        return "finished"
    reason = _writable(workdir)
    if reason:
        raise refuse(f"holds an unfinished classifier run but is not writable ({reason}); point {flag} elsewhere")
    return "partial"


def load_trained(workdir: str, image_shape, num_classes: int = 10) -> tuple[CNN, Any]:
    """The model and seed-0 parameters of a finished classifier run in `workdir`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(os.path.join(workdir, "results.json")) or not os.path.isfile(path):
        raise UserError(
            f"no finished classifier run in {workdir} (train one with lepton_jax/vision/configs/classifier.py)"
        )
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.get("classes"):
        num_classes = len(image_data.parse_classes(config.classes))
    model = make_model(config, num_classes)
    init_one = make_init(config, model, image_shape, read_source=False)  # the run's own checkpoint is restored
    key = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(epochs.init_seeds(init_one, config.num_seeds, parallel.make_mesh()), key)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3))
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    if restored is None:
        raise UserError(f"classifier run in {workdir} has no checkpoint")
    state = restored[1]
    variables = state.early.best_params if state.early is not None else state.variables()
    return model, seeds.tree_slice(variables, 0)


def ensure_trained(
    config, workdir: str, data: image_data.ImageData, flag: str = "--workdir", alternatives: Sequence = ()
) -> tuple[CNN, Any, dict]:
    """The classifier `config` describes, from `workdir`: checked (`check_workdir`), trained or resumed there if it
    has not finished, then restored (`load_trained`).

    Args:
      config: the classifier config.
      workdir: its run directory.
      data: the dataset it trains on (already loaded by the caller).
      flag, alternatives: as for `check_workdir`; every error, from training too, names `flag`.

    Returns:
      (model, seed-0 params, the classifier run's results).
    """
    status = check_workdir(config, workdir, flag, alternatives)
    context = f"feature classifier in {flag}={workdir}"
    try:
        if status != "finished":
            if status == "partial":  # keep the data path it was started with: config.json must stay the same
                with open(os.path.join(workdir, "config.json")) as f:
                    stored = json.load(f)
                config = config.copy_and_resolve_references()
                for key in UNKEYED:
                    config[key] = stored.get(key)
            run(config, workdir, data)
        with open(os.path.join(workdir, "results.json")) as f:
            results = json.load(f)
        model, params = load_trained(workdir, data.image_shape, data.num_classes)
    except UserError as error:
        raise UserError(f"{context}: {error}") from None
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{context}: {error}") from None
    return model, params, results
