"""What the VAE and DCGAN configs share: the `dataset[,flags]` arg, the base keys, and the FID/KID block."""

import ml_collections

from lepton_jax import config as config_lib


def base(trainer: str, arg: str | None, flags: tuple[str, ...]) -> tuple[ml_collections.ConfigDict, set[str]]:
    """Parses `DATASET[,FLAG...]` (dataset `mnist` by default) and returns the base config and the flags given.

    The base holds the trainer, the dataset and its data directory, the seed, and the FID/KID block: the final
    FID/KID/coverage of `fid_samples` samples per seed, in the feature space of the dataset's image classifier,
    restored from `classifier_workdir` (default `runs/classifier-<dataset>-<hash8>`, the hash of the classifier's
    config, so the smoke and full classifiers never share one); a given directory must hold a run of that config;
    trained or resumed there first if it has not finished.
    """
    parts = [p for p in (arg or "mnist").split(",") if p]
    names = [p for p in parts if p not in flags]
    c = ml_collections.ConfigDict()
    c.trainer = trainer
    c.dataset = names[0] if names else "mnist"
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $LEPTON_DATA_DIR
    c.seed = 0
    c.fid_samples = 10_000
    c.classifier_workdir = ml_collections.config_dict.placeholder(str)
    c.smoke_classifier = False  # the classifier's own smoke config (for tests)
    config_lib.training_keys(c)  # Adam; each config sets its rate (and the DCGAN its betas)
    config_lib.technique_keys(c, "mesh", "prune")  # DCGAN: both networks
    return c, {p for p in parts if p in flags}
