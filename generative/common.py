"""What the VAE and DCGAN trainers share: image grids, the sample evaluator, and per-seed result summaries."""

import os

import numpy as np
from absl import logging

from generative import evaluation
from generative.configs import classifier as classifier_config
from lepton_jax import classifier, data_images, parallel, supervised


def save_grid(images, path: str, nrow: int | None = None) -> None:
    """Writes (N, H, W, 1) images in [0, 1] as one grayscale PNG grid (`nrow` per row, default square)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.clip(np.asarray(images, np.float32)[..., 0], 0, 1)
    n, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = -(-n // nrow)
    canvas = np.ones((rows * (h + 1) + 1, nrow * (w + 1) + 1), np.float32)  # 1-pixel white borders
    for i, image in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = image
    factor = max(1, 480 // canvas.shape[1])  # nearest-neighbour upscaling to about 480 pixels wide
    canvas = np.kron(canvas, np.ones((factor, factor), np.float32))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    plt.imsave(path, canvas, cmap="gray", vmin=0, vmax=1)


def classifier_workdir(config) -> str:
    """Where the feature classifier of `config.dataset` lives (trained there on first use)."""
    return config.classifier_workdir or os.path.join("runs", f"classifier-{config.dataset}")


def make_evaluator(config, data: data_images.ImageData) -> tuple[evaluation.SampleEvaluator, dict]:
    """The FID/KID evaluator of `config.dataset`, training its classifier first if needed.

    Returns:
      (evaluator, results to merge: the classifier's test accuracy and the FID/KID floors).
    """
    workdir = classifier_workdir(config)
    clf_config = classifier_config.get_config(config.dataset + (",smoke" if config.get("smoke_classifier") else ""))
    clf_config.data_dir = config.data_dir
    if not os.path.isfile(os.path.join(workdir, "results.json")):
        logging.warning("training the feature classifier into %s first", workdir)
    model, params, clf_results = classifier.ensure_trained(clf_config, workdir, data)
    num = min(config.fid_samples, len(data.test_images))
    evaluator = evaluation.SampleEvaluator(evaluation.FeatureExtractor(model, params), data, num, seed=config.seed)
    extra = {"eval/classifier_test_accuracy": float(clf_results["test/accuracy"])}
    extra.update(evaluator.floors())
    return evaluator, extra


def evaluate_seeds(evaluator: evaluation.SampleEvaluator, samples_per_seed) -> dict:
    """Evaluates each seed's samples; mean and std over seeds of every metric (`summarize`)."""
    per_seed = [evaluator(np.asarray(s)) for s in samples_per_seed]
    stacked = {k: np.array([m[k] for m in per_seed]) for k in per_seed[0]}
    return supervised.summarize(stacked)


def finish(workdir: str, results: dict, plot_keys, title: str) -> dict:
    """Writes results.json and the learning curve; returns `results`."""
    supervised.write_results(workdir, results, plot_keys, title)
    return results


def plots_dir(workdir: str) -> str | None:
    """`<workdir>/plots` on the main process (None elsewhere: only process 0 draws)."""
    if not parallel.is_main_process():
        return None
    path = os.path.join(workdir, "plots")
    os.makedirs(path, exist_ok=True)
    return path
