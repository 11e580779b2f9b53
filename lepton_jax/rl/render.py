"""A PNG strip of frames from one deterministic episode (matplotlib only; no gym/pygame renderer needed)."""

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import plotting
from lepton_jax.errors import UserError
from lepton_jax.rl import envs


def rollout_observations(spec: envs.EnvSpec, act, params, key, max_steps: int):
    """Observations (T, *obs_shape) and rewards of one episode under `act`, until its first end."""
    runner = envs.reset(spec, key, 1)

    def body(carry, step_key):
        runner, alive = carry
        obs = runner.obs[0]
        runner, result = envs.step(spec, runner, act(params, runner.obs), step_key)
        ended = jnp.logical_or(result.terminated, result.truncated)[0]
        return (runner, alive * (1.0 - ended)), (obs, alive)

    keys = jax.random.split(key, max_steps)
    _, (obs, alive) = jax.jit(lambda r: jax.lax.scan(body, (r, jnp.ones(())), keys))(runner)
    length = int(np.asarray(alive).sum())
    return np.asarray(obs)[:length]


def _draw_cartpole(ax, obs):
    from matplotlib.patches import Rectangle

    x, theta = float(obs[0]), float(obs[2])
    ax.plot([-2.4, 2.4], [0, 0], color="gray", lw=1)
    ax.add_patch(Rectangle((x - 0.25, -0.1), 0.5, 0.2, color="tab:blue"))
    ax.plot([x, x + np.sin(theta)], [0.1, 0.1 + np.cos(theta)], color="tab:orange", lw=3)
    ax.set_xlim(-2.6, 2.6)
    ax.set_ylim(-0.3, 1.3)
    ax.set_aspect("equal")


def check_renderable(spec: envs.EnvSpec) -> None:
    """A `UserError` unless `episode_strip` can draw `spec`'s env (image observations, or CartPole)."""
    if (spec.obs_shape is None or len(spec.obs_shape) != 3) and spec.name != "CartPole-v1":
        raise UserError(f"--render draws image-observation envs (MinAtar, ...) and CartPole-v1, not {spec.name}")


def episode_strip(spec: envs.EnvSpec, act, params, key, path: str, num_frames: int = 12) -> None:
    """Writes `path`: `num_frames` evenly spaced frames of one episode (image observations, or CartPole)."""
    check_renderable(spec)
    plt = plotting.pyplot()

    obs = rollout_observations(spec, act, params, key, spec.max_episode_steps)
    picks = np.unique(np.linspace(0, len(obs) - 1, num_frames).astype(int))
    cols = min(6, len(picks))
    rows = -(-len(picks) // cols)
    height = 1.4 if spec.name == "CartPole-v1" else 2.8  # CartPole's frame is wide and low; MinAtar's square
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, height * rows + 0.6), dpi=110, squeeze=False)
    for ax in axes.flat[len(picks) :]:
        ax.axis("off")
    for ax, t in zip(axes.flat, picks):
        if spec.name == "CartPole-v1":
            _draw_cartpole(ax, obs[t])
        else:  # (H, W, C) one-hot channels -> one colour per channel
            frame = obs[t].astype(np.float32)
            ax.imshow(np.where(frame.any(-1), frame.argmax(-1) + 1, 0), cmap="tab10", vmin=0, vmax=10)
        ax.set_title(f"step {t}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{spec.name}: one episode of the greedy policy, {len(obs)} steps, {len(picks)} shown", fontsize=11)
    plotting.save(fig, path)
