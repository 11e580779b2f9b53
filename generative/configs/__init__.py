"""Configs of the generative models (VAE, DCGAN).

`KEYS` declares their keys beyond the shared ones (`lepton_jax.config.KEYS`) and `CHECKS` the relations between
them, both checked at launch (`lepton_jax.config.validate`).
"""

from lepton_jax.config import FLAG, PATH, Key, count, one_of, require, sizes

# 0 skips the FID/KID; a covariance needs at least 2 samples.
SAMPLES = Key("int", "0 (none) or >= 2", lambda v: v == 0 or 2 <= v <= 10**7)

KEYS = {
    "fid_samples": SAMPLES,
    "classifier_workdir": PATH,
    "smoke_classifier": FLAG,
    # VAE
    "architecture": one_of("mlp", "conv"),
    "latent_dim": count(1),
    "report_epochs": sizes(),
    "is_samples": count(1),
    "is_chunk": count(1),
    "is_batch": count(1),
    "is_examples": count(1),
    # DCGAN
    "gen_features": count(1),
    "gen_hidden": count(0),  # 0: no fully connected layer
    "disc_features": count(1),
    "disc_hidden": count(0),
    "eval_samples": SAMPLES,
    "sample_every_epochs": count(1),
}


def check_sizes(config) -> None:
    """The importance-sampled NLL's chunks divide its samples; reported epochs are epochs of the run."""
    if "is_samples" in config:
        require(
            config.is_samples % config.is_chunk == 0,
            f"config.is_samples ({config.is_samples}) must be a multiple of config.is_chunk ({config.is_chunk})",
        )
    for epoch in config.get("report_epochs", ()):
        require(
            epoch <= config.num_epochs,
            f"config.report_epochs={tuple(config.report_epochs)}: epoch {epoch} is past config.num_epochs "
            f"({config.num_epochs})",
        )


def check_classifier(config) -> None:
    """The feature classifier's workdir can serve this run (checked before the generative model trains)."""
    from generative import common

    common.check_classifier_workdir(config)


CHECKS = (check_sizes, check_classifier)
