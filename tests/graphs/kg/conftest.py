"""A walker smoke run shared by the knowledge-graph tests (resume, explain)."""

import pytest

from graphs.kg import walker
from graphs.kg.configs import walker as walker_config


def smoke_walker_config():
    config = walker_config.get_config("family,smoke")
    config.update(num_epochs=3, eval_every_epochs=3, beam_size=4, num_rollouts=2)
    return config


@pytest.fixture(scope="session")
def walker_run(tmp_path_factory):
    """(workdir, results) of an uninterrupted `smoke_walker_config()` run."""
    workdir = str(tmp_path_factory.mktemp("walker") / "run")
    return workdir, walker.train_and_evaluate(smoke_walker_config(), workdir)
