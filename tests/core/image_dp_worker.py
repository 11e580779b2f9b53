"""Subprocess worker: one VAE epoch on the 8x8 digits, data-parallel over every device and on one device.

    python tests/core/image_dp_worker.py

Prints the largest parameter difference between the two. The device count comes from XLA_FLAGS.
"""

import jax
import numpy as np
from jax.sharding import Mesh

from generative import vae
from generative.configs import vae as vae_config
from lepton_jax import epochs, parallel
from lepton_jax.vision import data as image_data


def one_epoch(config, data, mesh):
    model = vae.make_model(config, data.image_shape)
    init = epochs.init_seeds(vae.make_init(config, model, data.image_shape), config.num_seeds, mesh)
    epoch = epochs.make_epoch(vae.make_train_step(model), config.batch_size, mesh)
    images = epochs.to_device(data.train_images[:512], mesh)
    state, metrics = epoch(init(jax.random.PRNGKey(0)), images)
    return jax.device_get(state.params), jax.device_get(metrics)


def main():
    config = vae_config.get_config("digits,smoke")
    data = image_data.load("digits")
    sharded = one_epoch(config, data, parallel.make_mesh())
    single = one_epoch(config, data, Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), (parallel.DATA, parallel.MODEL)))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)))
    print("devices", jax.device_count(), "max_diff", diff)


if __name__ == "__main__":
    main()
