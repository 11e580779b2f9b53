"""The RESULTS.md graph reproductions (minutes each, real data): `LEPTON_DATA_DIR=... python -m pytest -m slow`."""

import os

import pytest

from tests.conftest import launch

# (config, results key, threshold): the project's targets, below the papers' numbers.
TARGETS = [
    ("gcn.py:cora", "test/accuracy_mean", 0.805),
    ("gcn.py:citeseer", "test/accuracy_mean", 0.695),
    ("gat.py:cora", "test/accuracy_mean", 0.820),
    ("gat.py:citeseer", "test/accuracy_mean", 0.710),
    ("gae.py:cora", "test/auc_mean", 0.900),
    ("gae.py:cora", "test/ap_mean", 0.910),
    ("gae.py:citeseer", "test/auc_mean", 0.880),
    ("gin.py:mutag", "test/accuracy_best_epoch_mean", 0.85),
    ("gcn.py:karate", "test/accuracy_mean", 0.80),
]

_DATA = os.environ.get("LEPTON_DATA_DIR")


@pytest.mark.slow
@pytest.mark.skipif(not _DATA, reason="needs the datasets: set LEPTON_DATA_DIR")
@pytest.mark.parametrize("config,key,threshold", TARGETS)
def test_graph_result_reaches_target(tmp_path, config, key, threshold):
    results = launch([f"--config=graphs/configs/{config}"], str(tmp_path / "run"), timeout=3600)
    assert results[key] >= threshold, {k: v for k, v in results.items() if k.startswith("test/")}
