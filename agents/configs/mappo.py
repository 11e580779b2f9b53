"""MAPPO on a cooperative multi-agent env: IPPO's actor, a critic on the global state (`agents/ippo.py`).

    python -m scripts.train --config=agents/configs/mappo.py:MPE_simple_spread_v3 --workdir=runs/mappo_spread

The arg is as for `agents/configs/ippo.py` (the env name, optionally `,smoke`). The defaults are JaxMARL's MAPPO
hyperparameters (baselines/MAPPO/config): `mappo_homogenous_rnn_mpe.yaml` for MPE (Adam 2e-3) and
`mappo_homogenous_rnn_smax.yaml` for SMAX (128 envs, Adam 2e-3, no entropy bonus, grad norm 0.25, ReLU); their
128-unit dense + GRU layers become a 128-128 MLP here. The rest is IPPO's config.

Expected on MPE_simple_spread_v3 (4 seeds, 7.5e5 env steps each, `--config.total_timesteps=750000`): training return
-19.4 +- 1.0 (-26.8 at the first update), in about 5.5 minutes on 2 busy CPU cores; the 10^7 default takes about an
hour there.
"""

import ml_collections

from agents.configs import ippo

MPE = {"lr": 2e-3, "hidden_sizes": (128, 128)}
SMAX = {
    "num_envs": 128,
    "lr": 2e-3,
    "ent_coef": 0.0,
    "max_grad_norm": 0.25,
    "hidden_sizes": (128, 128),
    "activation": "relu",
}
PRESETS = {ippo.DEFAULT_ENV: MPE, "MPE_simple_reference_v3": MPE} | {name: SMAX for name in ippo.SMAX_ENVS}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ippo.team_config("mappo", arg, PRESETS)
