"""stable-baselines3's PPO or DQN on CartPole-v1: `python -I sb3_cartpole.py {ppo,dqn} PROBLEM_JSON OUT_PATH`.

Runs in the sb3 venv (PyTorch, CPU; `requirements-bench.txt`), never in the project's: builds the model (timed as
setup), trains it for `sb3_timesteps` env steps, then evaluates the deterministic policy for `eval_episodes`
episodes on gymnasium's CartPole-v1. Writes JSON to OUT_PATH.
"""

import json
import sys
import time
from importlib.metadata import version

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def vec_env(p: dict):
    return make_vec_env("CartPole-v1", n_envs=p["num_envs"], seed=p["seed"], vec_env_cls=DummyVecEnv)


def build_ppo(p: dict):
    size = list(p["hidden_sizes"])
    lr = (lambda progress_remaining: progress_remaining * p["lr"]) if p["anneal_lr"] else p["lr"]
    return PPO(
        "MlpPolicy",
        vec_env(p),
        learning_rate=lr,
        n_steps=p["num_steps"],
        batch_size=p["num_envs"] * p["num_steps"] // p["num_minibatches"],
        n_epochs=p["update_epochs"],
        gamma=p["gamma"],
        gae_lambda=p["gae_lambda"],
        clip_range=p["clip_eps"],
        clip_range_vf=p["clip_eps"] if p["clip_value_loss"] else None,
        ent_coef=p["ent_coef"],
        vf_coef=p["vf_coef"],
        max_grad_norm=p["max_grad_norm"],
        seed=p["seed"],
        device="cpu",
        verbose=0,
        policy_kwargs={"net_arch": {"pi": size, "vf": size}, "activation_fn": ACTIVATIONS[p["activation"]]},
    )


def build_dqn(p: dict):
    return DQN(
        "MlpPolicy",
        vec_env(p),
        learning_rate=p["lr"],
        buffer_size=p["buffer_size"],
        learning_starts=p["learning_starts"],
        batch_size=p["batch_size"],
        tau=1.0,
        gamma=p["gamma"],
        train_freq=(1, "step"),
        gradient_steps=1,
        target_update_interval=p["target_update_interval"],
        # The same ε schedule in env steps when SB3 runs fewer steps than ours.
        exploration_fraction=p["exploration_fraction"] * p["total_timesteps"] / p["sb3_timesteps"],
        exploration_initial_eps=p["eps_start"],
        exploration_final_eps=p["eps_end"],
        max_grad_norm=p["max_grad_norm"],
        seed=p["seed"],
        device="cpu",
        verbose=0,
        policy_kwargs={"net_arch": list(p["hidden_sizes"]), "activation_fn": ACTIVATIONS[p["activation"]]},
    )


def run(algo_name: str, p: dict) -> dict:
    model, setup_s = timed(lambda: {"ppo": build_ppo, "dqn": build_dqn}[algo_name](p))
    _, train_s = timed(lambda: model.learn(total_timesteps=p["sb3_timesteps"]))
    returns, _ = evaluate_policy(
        model,
        Monitor(gym.make("CartPole-v1")),
        n_eval_episodes=p["eval_episodes"],
        deterministic=True,
        return_episode_rewards=True,
    )
    result = {
        "compile_s": None,
        "setup_s": setup_s,
        "train_s": train_s,
        "steps": int(model.num_timesteps),
        "eval_return": float(np.mean(returns)),
        "eval_return_per_seed": [float(np.mean(returns))],
        "num_seeds": 1,
        "torch_threads": torch.get_num_threads(),
        "version": f"stable-baselines3 {version('stable-baselines3')}, torch {torch.__version__}",
    }
    if algo_name == "dqn":
        result["gradient_steps"] = int(model._n_updates)
    return {"single": result}


if __name__ == "__main__":
    algo_name, problem, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = run(algo_name, problem)
    with open(out_path, "w") as f:
        json.dump(result, f)
