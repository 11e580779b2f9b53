"""Subprocess worker for the parallelism tests: trains smoke PPO and saves the final parameters.

    python tests/core/dp_worker.py WORKDIR OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]

The device count comes from XLA_FLAGS, set by the calling test before JAX starts.
"""

import os
import sys

import numpy as np


def main(workdir, out, coordinator=None, num_processes=None, process_id=None):
    from lepton_jax import parallel

    if coordinator:
        parallel.initialize_distributed(coordinator, int(num_processes), int(process_id))
    import jax

    from agents import ppo
    from agents.configs import ppo as ppo_config
    from lepton_jax.rl import loop

    config = ppo_config.get_config("smoke")
    config.sweep.lr = os.environ.get("DP_WORKER_SWEEP_LR", "")  # e.g. "0.00025,0.001": a sweep, values x seeds
    state, results = loop.run(config, workdir, ppo.make_agent)
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.train_state.params))]
    if parallel.is_main_process():
        np.savez(out, *leaves)
    print("devices", jax.device_count(), "processes", jax.process_count(), "hash", results["params_sha256"])


if __name__ == "__main__":
    main(*sys.argv[1:])
