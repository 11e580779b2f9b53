"""Tensor parallelism: a 2x2 (data, model) mesh of 4 fake CPU devices trains as one device does, the GCN kernels
are really split over `model`, the layout stays put with one compile, and a bad `config.mesh` is one clear line."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import pytest

from graphs.configs import CHECKS
from graphs.configs import KEYS as GRAPH_KEYS
from graphs.configs import gcn as gcn_config
from lepton_jax import config as config_lib
from lepton_jax import parallel
from lepton_jax.errors import UserError
from tests.conftest import ROOT, run_python
from tests.core import tp_worker

WORKER = os.path.join(ROOT, "tests", "core", "tp_worker.py")


def _params(name, state):
    params = state.train_state.params if name == "gcn" else state.params
    return {
        f"{name}{jax.tree_util.keystr(path)}": np.asarray(x)
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The worker's report and parameters on `data:2,model:2` over 4 devices, and the one-device reference
    (`(initial, trained)` parameters) trained in this process while the worker runs: each compiles on its own core."""
    out = tmp_path_factory.mktemp("tensor_parallel") / "params.npz"
    with ThreadPoolExecutor(1) as pool:  # the thread only waits for the subprocess
        worker = pool.submit(
            run_python,
            [WORKER, "data:2,model:2", str(out)],
            env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        )
        reference, initial = {}, {}
        for name, train in (("gcn", tp_worker.train_gcn), ("classifier", tp_worker.train_classifier)):
            first, last = train("")
            reference |= _params(name, last)
            initial |= _params(name, first)
        result = worker.result()
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as f:
        return json.loads(result.stdout.strip().splitlines()[-1]), dict(f), (initial, reference)


def test_2x2_mesh_trains_as_one_device(sharded):
    assert jax.device_count() == 1  # the reference was trained in this process
    report, params, (initial, reference) = sharded
    assert report["devices"] == 4
    assert params.keys() == reference.keys() and len(reference) == 14  # GCN 4 x 2, the CNN 3 x 2
    diff = max(float(np.abs(params[k] - reference[k]).max()) for k in reference)
    assert diff < 1e-5, diff
    # Training moved every kernel, so the comparison is not of untouched initial values.
    assert all(np.abs(reference[k] - initial[k]).max() > 1e-3 for k in reference if k.endswith("['kernel']"))


def test_gcn_kernels_are_split_over_model_and_each_device_holds_half(sharded):
    layout = sharded[0]["gcn"]["layout"]  # {path: [spec, per-device shape]}, shapes (seeds, in, out)
    assert layout == {
        "params/conv_0/linear/kernel": ["P(None, None, 'model')", [2, 34, 2]],  # column: output axis, (2, 34, 4)
        "params/conv_1/linear/kernel": ["P(None, 'model', None)", [2, 2, 4]],  # row: input axis, (2, 4, 4)
        "params/conv_2/linear/kernel": ["P(None, None, 'model')", [2, 4, 1]],  # the second pair, (2, 4, 2)
        "params/conv_3/linear/kernel": ["P(None, 'model', None)", [2, 1, 2]],
    }
    pair = sharded[0]["classifier"]["layout"]  # the classifier's dense -> head, trained through `lepton_jax.epochs`
    assert pair["params/dense/kernel"] == ["P(None, None, 'model')", [2, 64, 4]]  # (2, 64, 8)
    assert pair["params/head/kernel"][0].startswith("P(None, 'model'") and pair["params/head/kernel"][1] == [2, 4, 10]
    assert pair["params/conv0/kernel"][1] == [2, 3, 3, 1, 4]  # the convolution is not split


def test_layout_stays_put_and_the_step_compiles_once(sharded):
    for name in ("gcn", "classifier"):
        assert sharded[0][name]["compiles_after_first_epoch"] == 0, name
        assert sharded[0][name]["same_layout"], name


def test_a_mesh_that_does_not_fit_or_a_split_that_cannot_be_made_is_one_line(sharded):
    errors = sharded[0]["errors"]
    assert errors["data:3,model:2"] == (
        "config.mesh='data:3,model:2' asks for data x model = 3 x 2 = 6 devices, but the run has 4"
    )
    assert errors["model:4"].startswith("parameter params/conv_2/") and "(config.mesh)" in errors["model:4"]
    with pytest.raises(UserError, match=r"^config.mesh='data:3,model:2' asks for .* = 6 devices, but the run has 1$"):
        parallel.mesh_from_config({"mesh": "data:3,model:2"})


@pytest.mark.parametrize("value", ["data:2,model", "data:0", "gpu:2", "data:2,data:2", "data:x", "data:2;model:2"])
def test_a_malformed_mesh_is_refused_at_launch_in_one_line(value):
    config = gcn_config.get_config("karate,smoke")
    config.mesh = value
    for check in (lambda: config_lib.validate(config, GRAPH_KEYS, CHECKS), lambda: parallel.mesh_from_config(config)):
        with pytest.raises(UserError) as error:
            check()
        message = str(error.value)
        assert message.startswith(f"config.mesh={value!r} is not allowed: it must be axis:size pairs such as")
        assert "\n" not in message


def test_mesh_values_read_as_documented():
    assert config_lib.mesh_axes("") == {}
    assert config_lib.mesh_axes(" model:2 , data:3 ") == {"model": 2, "data": 3}
    assert gcn_config.get_config("karate,smoke").mesh == ""  # every trainer's config has the key, empty
    for value in ("", "data:1", "model:1", "data:1,model:1"):
        assert dict(parallel.mesh_from_config({"mesh": value}).shape) == {"data": 1, "model": 1}
