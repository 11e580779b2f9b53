"""Generative models: VAE and DCGAN, scored by FID/KID in the image classifier's feature space."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {"vae": "generative.vae", "dcgan": "generative.dcgan"}
