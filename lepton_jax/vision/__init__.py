"""Image classification, the core's canonical supervised trainer: idx/MNIST/digits loaders (`data.py`) and the CNN
classifier (`classifier.py`, config in `configs/`). The generative models use it for their FID/KID features. Beside
it, learning with few or no labels on the same networks: semi-supervised (`semi_supervised.py`), SimCLR
self-supervised pretraining (`simclr.py`) and k-means clustering of pixels or learned features (`clustering.py`)."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {
    "classifier": "lepton_jax.vision.classifier",
    "multitask_classifier": "lepton_jax.vision.multitask",
    "semi_supervised": "lepton_jax.vision.semi_supervised",
    "simclr": "lepton_jax.vision.simclr",
    "kmeans": "lepton_jax.vision.clustering",
    "capsnet": "lepton_jax.vision.capsnet",
}
