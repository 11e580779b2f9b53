"""What the VAE and DCGAN trainers share: image grids, the sample evaluator, and per-seed FID/KID summaries.

The evaluator's feature classifier is found by its config (`runs/classifier-<dataset>-<hash8>` by default, or
`--config.classifier_workdir`, which must hold a run of that config), trained or resumed there when it has not
finished; `check_classifier_workdir` says what is wrong with that directory, in one line naming the flag to change,
before the generative model trains.
"""

import os

import numpy as np
from absl import logging

from generative import evaluation
from lepton_jax import parallel, run
from lepton_jax.vision import data as image_data
from lepton_jax.vision import trained
from lepton_jax.vision.configs import classifier as classifier_config

CLASSIFIER_FLAG = "--config.classifier_workdir"
SMOKE_FLAG = "--config.smoke_classifier"


def feature_classifier_config(config, smoke: bool | None = None):
    """The config of the classifier whose features score `config`'s samples: `config.dataset`'s, its smoke config
    when `config.smoke_classifier` (or `smoke`) says so."""
    smoke = bool(config.get("smoke_classifier")) if smoke is None else smoke
    clf_config = classifier_config.get_config(config.dataset + (",smoke" if smoke else ""))
    clf_config.data_dir = config.data_dir
    return clf_config


def classifier_workdir(config) -> str:
    """Where the feature classifier lives: `config.classifier_workdir`, else `runs/classifier-<dataset>-<hash8>`
    with the hash of the classifier's config (`trained.default_workdir`), so different classifiers (the smoke
    one, the full one) never share a directory."""
    return config.classifier_workdir or trained.default_workdir(feature_classifier_config(config))


def _the_other_classifier(config) -> tuple[tuple[str, object], ...]:
    smoke = not bool(config.get("smoke_classifier"))
    return ((f"{SMOKE_FLAG}={smoke}", feature_classifier_config(config, smoke)),)


def check_classifier_workdir(config) -> str | None:
    """Checks, before anything trains, that the feature classifier's workdir can serve this run.

    Refused, in one `UserError` line naming `--config.classifier_workdir` (and `--config.smoke_classifier` when the
    directory holds the other one of the smoke and the full classifier): a path that is a file or cannot be written
    where the classifier still has to train, a directory that is not a classifier run, a run of another classifier
    config, a finished run without its checkpoint (`lepton_jax.vision.trained.check_workdir`).

    Returns:
      None when the run computes no FID (`config.fid_samples` is 0), else "finished" (reused), "partial" (resumed
      there first) or "new" (trained there first).
    """
    if not config.fid_samples:
        return None
    return trained.check_workdir(
        feature_classifier_config(config), classifier_workdir(config), CLASSIFIER_FLAG, _the_other_classifier(config)
    )


def make_evaluator(config, data: image_data.ImageData) -> tuple[evaluation.SampleEvaluator, dict]:
    """The FID/KID evaluator of `config.dataset`, training (or resuming) its classifier first if needed.

    Returns:
      (evaluator, results to merge: the classifier's test accuracy and the FID/KID floors).
    """
    workdir = classifier_workdir(config)
    clf_config = feature_classifier_config(config)
    if not os.path.isfile(os.path.join(workdir, "results.json")):
        logging.warning("training the feature classifier into %s first", workdir)
    model, params, clf_results = trained.ensure_trained(
        clf_config, workdir, data, CLASSIFIER_FLAG, _the_other_classifier(config)
    )
    num = min(config.fid_samples, len(data.test_images))
    evaluator = evaluation.SampleEvaluator(evaluation.FeatureExtractor(model, params), data, num, seed=config.seed)
    extra = {"eval/classifier_test_accuracy": float(clf_results["test/accuracy_mean"])}
    extra.update(evaluator.floors())
    return evaluator, extra


def evaluate_seeds(evaluator: evaluation.SampleEvaluator, samples_per_seed) -> dict:
    """Evaluates each seed's samples (FID, KID, coverage; a progress bar over the seeds); every metric's mean, std
    and per-seed values (`lepton_jax.run.seed_summary`)."""
    bar = run.phase(len(samples_per_seed), "FID/KID per seed", unit="seed")
    per_seed = []
    for samples in samples_per_seed:
        per_seed.append(evaluator(np.asarray(samples)))
        bar.update(1)
    bar.close()
    return run.seed_summary({k: np.array([m[k] for m in per_seed]) for k in per_seed[0]})


def plots_dir(workdir: str) -> str | None:
    """`<workdir>/plots` on the main process (None elsewhere: only process 0 draws)."""
    if not parallel.is_main_process():
        return None
    path = os.path.join(workdir, "plots")
    os.makedirs(path, exist_ok=True)
    return path
