"""The reproduction tier: every registry row whose recorded run took at most ~2 minutes, re-run and compared
within its tolerance (`scripts.reproduce`). Minutes in all: `LEPTON_DATA_DIR=... python -m pytest -m slow`."""

import os

import pytest

from scripts import reproduce, results

QUICK_SECONDS = 150  # "about 2 minutes", as recorded
ALL = {r["id"]: r for r in results.load()["rows"]}
ROWS = [r for r in ALL.values() if r["mean"] is not None and (r.get("wall_seconds") or 1e9) <= QUICK_SECONDS]


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_registry_row_reproduces(tmp_path, row):
    if row.get("needs_data") and not os.environ.get("LEPTON_DATA_DIR"):
        pytest.skip("needs the datasets: set LEPTON_DATA_DIR")
    entry = reproduce.run_row(row, str(tmp_path / "run"), str(tmp_path / "log.txt"), ALL)  # `needs` rows run first
    assert entry["status"] == "reproduced", entry
