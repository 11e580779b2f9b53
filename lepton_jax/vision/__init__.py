"""Image classification, the core's canonical supervised trainer: idx/MNIST/digits loaders (`data.py`) and the CNN
classifier (`classifier.py`, config in `configs/`). The generative models use it for their FID/KID features."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {"classifier": "lepton_jax.vision.classifier", "multitask_classifier": "lepton_jax.vision.multitask"}
