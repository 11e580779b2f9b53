"""Configs of the image classifier.

`KEYS` declares its keys beyond the shared ones (`lepton_jax.config.KEYS`), checked at launch.
"""

from lepton_jax.config import sizes

KEYS = {"conv_features": sizes(1)}
CHECKS = ()
