import jax.numpy as jnp
import numpy as np
from scipy import stats

from agents.ppo import ppo_loss
from lepton_jax.rl.distributions import Categorical, DiagGaussian
from lepton_jax.rl.gae import Transition


def test_categorical_matches_closed_form():
    logits = jnp.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    dist = Categorical(logits)
    np.testing.assert_allclose(dist.log_prob(jnp.array([1, 2])), np.log([p[0, 1], p[1, 2]]), rtol=1e-6)
    np.testing.assert_allclose(dist.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-6)
    assert dist.mode().tolist() == [1, 0]


def test_diag_gaussian_matches_scipy():
    mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[0.1, -0.5]])
    action = jnp.array([[0.0, -0.7]])
    dist = DiagGaussian(mean, log_std)
    expected = stats.norm(np.asarray(mean), np.exp(np.asarray(log_std))).logpdf(np.asarray(action)).sum(-1)
    np.testing.assert_allclose(dist.log_prob(action), expected, rtol=1e-5)
    expected_h = stats.norm(0, np.exp(np.asarray(log_std))).entropy().sum(-1)
    np.testing.assert_allclose(dist.entropy(), expected_h, rtol=1e-5)


def test_ppo_loss_terms_match_direct_computation():
    rng = np.random.default_rng(1)
    n, a = 32, 3
    logits = rng.normal(size=(n, a)).astype(np.float32)
    values = rng.normal(size=(n,)).astype(np.float32)

    def apply_fn(params, obs):  # a fake network: outputs are the parameters themselves
        del obs
        return Categorical(params["logits"]), params["values"]

    params = {"logits": jnp.asarray(logits), "values": jnp.asarray(values)}
    actions = rng.integers(0, a, size=n)
    old_log_prob = rng.normal(size=n).astype(np.float32) * 0.3 - 1.0
    old_values = rng.normal(size=n).astype(np.float32)
    advantages = rng.normal(size=n).astype(np.float32)
    targets = rng.normal(size=n).astype(np.float32)
    batch = Transition(
        jnp.zeros((n, 1)),
        jnp.asarray(actions),
        jnp.zeros(n),
        jnp.zeros(n),
        jnp.asarray(old_values),
        jnp.asarray(old_log_prob),
    )
    clip, vf, ent = 0.2, 0.5, 0.01
    total, terms = ppo_loss(params, apply_fn, batch, jnp.asarray(advantages), jnp.asarray(targets), clip, vf, ent)

    # Direct NumPy computation.
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    logp = logp_all[np.arange(n), actions]
    ratio = np.exp(logp - old_log_prob)
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv))
    v_clipped = old_values + np.clip(values - old_values, -clip, clip)
    vl = 0.5 * np.mean(np.maximum((values - targets) ** 2, (v_clipped - targets) ** 2))
    entropy = -np.mean((np.exp(logp_all) * logp_all).sum(-1))
    np.testing.assert_allclose(terms["policy_loss"], pg, rtol=1e-5)
    np.testing.assert_allclose(terms["value_loss"], vl, rtol=1e-5)
    np.testing.assert_allclose(terms["entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(total, pg + vf * vl - ent * entropy, rtol=1e-5)
    np.testing.assert_allclose(terms["clip_fraction"], np.mean(np.abs(ratio - 1) > clip), rtol=1e-6)
