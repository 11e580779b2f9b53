"""A seq2seq smoke run shared by the sequence tests (learning, workdir contents, resume)."""

import pytest

from lepton_jax.sequence import trainer
from lepton_jax.sequence.configs import seq2seq


def smoke_config():
    return seq2seq.get_config("reversal,transformer,smoke")


@pytest.fixture(scope="session")
def seq2seq_run(tmp_path_factory):
    """(workdir, results) of an uninterrupted `smoke_config()` run."""
    workdir = str(tmp_path_factory.mktemp("seq2seq") / "run")
    return workdir, trainer.train_and_evaluate(smoke_config(), workdir)
