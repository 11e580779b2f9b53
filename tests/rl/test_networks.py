"""The shared RL networks' torsos: the MLP by default, the MinAtar paper's convolution on image observations."""

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax.rl.networks import ActorCritic, ConvTorso, QNetwork, flatten_obs

OBS_SHAPE = (10, 10, 4)  # MinAtar Breakout's grid


def _obs(key, batch):
    return flatten_obs(jax.random.bernoulli(key, 0.2, (batch, *OBS_SHAPE)), OBS_SHAPE)


def test_conv_torso_shapes_and_parameters():
    net = ActorCritic(3, hidden_sizes=(128,), activation="relu", obs_shape=OBS_SHAPE, conv_filters=16)
    obs = _obs(jax.random.PRNGKey(0), 5)
    params = net.init(jax.random.PRNGKey(1), obs)
    dist, value = net.apply(params, obs)
    assert dist.logits.shape == (5, 3) and value.shape == (5,)
    kernel = params["params"]["actor_torso"]["Conv_0"]["kernel"]
    assert kernel.shape == (3, 3, 4, 16)  # 3x3 over the 4 channels, 16 filters
    dense = params["params"]["actor_torso"]["MLP_0"]["Dense_0"]["kernel"]
    assert dense.shape == (8 * 8 * 16, 128)  # VALID: 10x10 -> 8x8
    # Without conv_filters the same network is the MLP over the flat grid (the default is unchanged).
    mlp = ActorCritic(3, hidden_sizes=(128,), activation="relu", obs_shape=OBS_SHAPE).init(jax.random.PRNGKey(1), obs)
    assert "Conv_0" not in mlp["params"]["actor_torso"]


def test_conv_torso_sees_space_and_leading_axes():
    torso = ConvTorso(OBS_SHAPE, 4, (8,), "relu")
    obs = _obs(jax.random.PRNGKey(2), 6)
    params = torso.init(jax.random.PRNGKey(3), obs)
    out = torso.apply(params, obs)
    # Extra leading axes (time x batch) give the same per-example outputs.
    np.testing.assert_allclose(torso.apply(params, obs.reshape(2, 3, -1)).reshape(6, -1), out, rtol=1e-6)
    # It reads positions: moving one cell of one image changes that image's output only.
    grid = obs.reshape(6, *OBS_SHAPE)
    moved = grid.at[0].set(jnp.roll(grid[0], 3, axis=0)).reshape(6, -1)
    changed = np.abs(np.asarray(torso.apply(params, moved) - out)).max(axis=1)
    assert changed[0] > 0 and np.all(changed[1:] == 0)


def test_vmapped_seeds_are_independent():
    """Per-seed parameters under vmap: each seed's Q-values are those of that seed's network alone."""
    net = QNetwork(3, (32,), "relu", obs_shape=OBS_SHAPE, conv_filters=8)
    obs = _obs(jax.random.PRNGKey(4), 7)
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    params = jax.vmap(lambda k: net.init(k, obs))(keys)
    together = jax.vmap(lambda p: net.apply(p, obs))(params)
    for i in range(3):
        alone = net.apply(jax.tree.map(lambda x, i=i: x[i], params), obs)
        np.testing.assert_allclose(together[i], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[0], together[1])
