"""The shared epoch loop: resume == uninterrupted, early stop, NaN guard, workdir contents."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax.training import train_state

from lepton_jax import supervised
from lepton_jax.metrics import TrainingDiverged


def _config(**overrides):
    config = ml_collections.ConfigDict(
        {"trainer": "toy", "seed": 0, "eval_every_epochs": 2, "checkpoint_every_epochs": 1, "keep_checkpoints": 2}
    )
    config.update(overrides)
    return config


def _task(num_epochs=6, lr=0.3, patience_epochs=None):
    """Linear regression on fixed data, one jitted full-batch step per epoch; 'done' after `patience_epochs`."""
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    tx = optax.sgd(lr)

    def init(key):
        params = {"w": jax.random.normal(key, (3,))}
        return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)

    @jax.jit
    def step(state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((x @ p["w"] - y) ** 2))(state.params)
        return state.apply_gradients(grads=grads), loss

    def train_epoch(state, epoch):
        state, loss = step(state)
        return state, {"train/loss": loss}

    def evaluate(state):
        return {"eval/error": jnp.abs(state.params["w"] - jnp.array([1.0, -2.0, 0.5])).sum()}

    done = None if patience_epochs is None else (lambda state: int(state.step) >= patience_epochs)
    return supervised.Task(init, train_epoch, evaluate, num_epochs, done, plot_keys=("train/loss",))


def test_resume_equals_uninterrupted_and_workdir(tmp_path):
    full, results = supervised.fit(_config(), str(tmp_path / "full"), _task(6))
    supervised.fit(_config(), str(tmp_path / "split"), _task(3))  # stopped after 3 epochs...
    os.remove(tmp_path / "split" / "results.json")  # ...as if cut short (a finished run is not re-run)...
    resumed, resumed_results = supervised.fit(_config(), str(tmp_path / "split"), _task(6))  # ...and continued
    np.testing.assert_array_equal(full.params["w"], resumed.params["w"])
    assert resumed_results["resumed_from_epoch"] == 3 and results["resumed_from_epoch"] == 0
    assert results["eval/error_mean"] < 1.0 and results["perf/epochs"] == 6
    rows = [json.loads(line) for line in open(tmp_path / "split" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # no record lost or repeated across the resume
    written = json.load(open(tmp_path / "full" / "results.json"))
    assert written["perf/epochs"] == 6 and written["params_sha256"] == results["params_sha256"]
    assert os.path.getsize(tmp_path / "full" / "plots" / "learning_curve.png") > 0


def test_done_stops_early(tmp_path):
    state, results = supervised.fit(_config(), str(tmp_path), _task(10, patience_epochs=4))
    assert int(state.step) == 4 and results["perf/epochs"] == 4 and "eval/error_mean" in results


def test_nan_loss_names_the_epoch(tmp_path):
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        supervised.fit(
            _config(), str(tmp_path), _task(3, lr=float("nan"))
        )  # epoch 1 reports the loss before its NaN update
