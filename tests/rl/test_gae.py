import jax.numpy as jnp
import numpy as np

from lepton_jax.rl.gae import bootstrap_truncated, gae


def test_gae_matches_hand_computation():
    # One env, T = 3, the episode ends after step 1 (index 1).
    gamma, lam = 0.9, 0.8
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    values = jnp.array([[0.5], [1.0], [1.5]])
    dones = jnp.array([[0.0], [1.0], [0.0]])
    last_value = jnp.array([2.0])
    adv, targets = gae(rewards, values, dones, last_value, gamma, lam)
    # Worked by hand, backwards:
    d2 = 3.0 + 0.9 * 2.0 - 1.5  # 3.3, bootstraps from last_value
    a2 = d2
    d1 = 2.0 + 0.0 - 1.0  # 1.0, episode ended: no bootstrap
    a1 = d1  # the advantage does not leak across the episode boundary
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a0 = d0 + 0.9 * 0.8 * a1  # 2.12
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(targets)[:, 0], [a0 + 0.5, a1 + 1.0, a2 + 1.5], rtol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 2)).astype(np.float32)
    values = rng.normal(size=(6, 2)).astype(np.float32)
    last = rng.normal(size=(2,)).astype(np.float32)
    adv, _ = gae(rewards, values, np.zeros((6, 2)), last, 0.97, 1.0)
    ret = last.copy()
    expected = np.zeros_like(rewards)
    for t in reversed(range(6)):
        ret = rewards[t] + 0.97 * ret
        expected[t] = ret - values[t]
    np.testing.assert_allclose(np.asarray(adv), expected, rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_but_termination_does_not():
    reward = jnp.array([1.0, 1.0, 1.0])
    terminated = jnp.array([False, True, True])
    truncated = jnp.array([True, False, True])
    out = bootstrap_truncated(reward, terminated, truncated, jnp.array([10.0, 10.0, 10.0]), 0.5)
    np.testing.assert_allclose(np.asarray(out), [6.0, 1.0, 1.0])
