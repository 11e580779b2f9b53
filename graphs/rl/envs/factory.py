"""Graph env names -> environments: `{MVC,MaxCut}-{ER,BA}-MIN-MAX`, e.g. `MVC-ER-15-20`, `MaxCut-BA-40-50`."""

import re

from graphs.rl.envs.common import GraphEnv, GraphEnvParams
from graphs.rl.envs.generators import GraphDistribution
from graphs.rl.envs.maxcut import MaxCut
from graphs.rl.envs.mvc import MinimumVertexCover
from lepton_jax.errors import UserError

PROBLEMS: dict[str, type[GraphEnv]] = {"MVC": MinimumVertexCover, "MaxCut": MaxCut}
WEIGHTED = {"MVC": False, "MaxCut": True}  # MaxCut on U(0, 1) edge weights, vertex cover on unweighted graphs
FORMAT = "{MVC,MaxCut}-{ER,BA}-MIN-MAX with 1 <= MIN <= MAX (BA: MIN >= 5), e.g. MVC-ER-15-20"
_NAME = re.compile(r"(MVC|MaxCut)-(ER|BA)-(\d+)-(\d+)")


def parse_name(name: str) -> tuple[str, GraphDistribution]:
    """`"MaxCut-BA-40-50"` -> `("MaxCut", GraphDistribution("ba", 40, 50, weighted=True))`; UserError if malformed."""
    match = _NAME.fullmatch(name)
    if match is not None:
        problem, kind, low, high = match.group(1), match.group(2).lower(), int(match.group(3)), int(match.group(4))
        try:
            return problem, GraphDistribution(kind, low, high, weighted=WEIGHTED[problem])
        except UserError:
            pass
    raise UserError(f"malformed graph env name '{name}'; expected {FORMAT}")


def make(name: str) -> tuple[GraphEnv, GraphEnvParams]:
    """The env called `name` and its default params (the factory `lepton_jax.rl.envs.make_env` calls)."""
    problem, distribution = parse_name(name)
    env = PROBLEMS[problem](distribution)
    return env, env.default_params
