"""Placement (`lepton_jax/placement.py`): each `placement` key gives the default layout's numbers bit for bit, and
puts what it places where it says (the replay buffer in pinned host memory, evaluation on the CPU device, the image
training set fed from the host); a bad or misplaced key is one line."""

import functools
import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agents import dqn
from agents.configs import dqn as dqn_config
from graphs.rl import trainer as graph_trainer
from graphs.rl.configs import graph_ppo as graph_ppo_config
from graphs.rl.configs import s2v_dqn as s2v_dqn_config
from lepton_jax import checkpoint, parallel, placement
from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.rl import envs, loop, replay
from lepton_jax.rl.agent import run_updates_masked
from lepton_jax.vision import classifier, trained
from lepton_jax.vision.configs import classifier as classifier_config
from scripts import trainers
from tests.conftest import run_python

CPU = jax.devices("cpu")[0]


def _equal(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    return len(leaves_a) == len(leaves_b) and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


# ---- the keys ----------------------------------------------------------------------------------------------------


def test_defaults_are_todays_layout_and_every_trainer_with_the_group_declares_it():
    for config in (
        dqn_config.get_config("smoke"),
        s2v_dqn_config.get_config("smoke"),
        graph_ppo_config.get_config("smoke"),
        classifier_config.get_config("digits,smoke"),
    ):
        assert placement.settings(config) == {"replay": "device", "data": "device", "eval": "same"}
        trainers.validate(config)  # every key declared
        placement.check(config)
    assert placement.settings(ml_collections.ConfigDict({"trainer": "ppo"})) == placement.DEFAULTS  # no group


@pytest.mark.parametrize(("key", "value"), [("replay", "host"), ("data", "pinned_host"), ("eval", "gpu")])
def test_a_bad_value_is_one_line_naming_key_value_and_choices(key, value):
    config = classifier_config.get_config("digits,smoke")
    config.placement[key] = value
    with pytest.raises(UserError) as error:
        trainers.validate(config)
    message = str(error.value)
    assert "\n" not in message and f"config.placement.{key}={value!r}" in message and "one of" in message
    with pytest.raises(UserError, match=f"config.placement.{key}="):
        placement.settings(config)  # read by a trainer: the same check


@pytest.mark.parametrize(
    ("get_config", "key", "value"),
    [
        (lambda: dqn_config.get_config("smoke"), "data", "host"),
        (lambda: dqn_config.get_config("smoke"), "eval", "cpu"),
        (lambda: graph_ppo_config.get_config("smoke"), "replay", "pinned_host"),
        (lambda: classifier_config.get_config("digits,smoke"), "replay", "pinned_host"),
    ],
)
def test_a_key_with_nothing_to_place_is_refused_in_one_line(get_config, key, value):
    config = get_config()
    config.placement[key] = value
    with pytest.raises(UserError) as error:
        placement.check(config)
    message = str(error.value)
    assert "\n" not in message and f"config.placement.{key}={value!r}" in message
    assert f"trainer '{config.trainer}' has no" in message and "leave it at" in message


def test_trainers_refuse_a_misplaced_key_before_building_anything():
    config = dqn_config.get_config("smoke")
    config.placement.eval = "cpu"
    with pytest.raises(UserError, match="trainer 'dqn' has no evaluation pass"):
        dqn.make_agent(config, envs.make_env(config.env_name))
    config = classifier_config.get_config("digits,smoke")
    config.placement.replay = "pinned_host"
    with pytest.raises(UserError, match="trainer 'classifier' has no replay buffer"):
        placement.put_data(config, (np.zeros((4, 8, 8, 1)), np.zeros(4, np.int32)), parallel.make_mesh())


def test_a_backend_without_pinned_host_memory_is_one_line_naming_the_key():
    device = types.SimpleNamespace(platform="tpu", addressable_memories=lambda: [types.SimpleNamespace(kind="device")])
    with pytest.raises(UserError) as error:
        placement.require_memory_kind("pinned_host", "placement.replay", "pinned_host", device)
    message = str(error.value)
    assert "\n" not in message and "config.placement.replay='pinned_host'" in message
    assert "its memories: device" in message and "set config.placement.replay='device'" in message
    placement.require_memory_kind("pinned_host", "placement.replay", "pinned_host")  # this CPU backend has it


def test_a_run_saved_before_the_group_existed_resumes(tmp_path):
    config = dqn_config.get_config("smoke")
    old = config_lib.to_dict(config)
    del old["placement"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    config_lib.save_config(config, str(tmp_path))  # the group at its defaults is no change
    assert "placement" not in trained.config_key(classifier_config.get_config("digits,smoke"))  # nor a cache's
    config.placement.replay = "pinned_host"
    with pytest.raises(UserError, match="changed: placement"):
        config_lib.save_config(config, str(tmp_path))


# ---- the replay buffer ---------------------------------------------------------------------------------------------


def test_replay_in_pinned_host_memory_stores_and_samples_as_on_the_device():
    row = {"obs": jnp.zeros((2, 3)), "action": jnp.zeros((2,), jnp.int32)}

    @functools.partial(jax.jit, static_argnums=0)
    def fill_and_sample(memory_kind, key):
        buffer = replay.init(row, 5, memory_kind)
        for i in range(7):  # wraps around: rows 5, 6 overwrite 0, 1
            step = {"obs": jnp.full((2, 3), i, jnp.float32) + jnp.arange(2.0)[:, None], "action": jnp.arange(2) + i}
            buffer = replay.add(buffer, step)
        return buffer, replay.sample(buffer, key, 16, horizon=2)

    key = jax.random.PRNGKey(3)
    on_device, on_host = fill_and_sample("device", key), fill_and_sample("pinned_host", key)
    assert _equal(on_device, on_host)
    np.testing.assert_array_equal(on_host[0].data["action"][:, 0], [5, 6, 2, 3, 4])
    assert {x.sharding.memory_kind for x in jax.tree.leaves(on_host[0].data)} == {"pinned_host"}
    assert {x.sharding.memory_kind for x in jax.tree.leaves(on_device[0].data)} == {"device"}
    # Inside the jitted function the buffer is typed host memory and the sampled batch device memory.
    closed = jax.make_jaxpr(lambda k: fill_and_sample.__wrapped__("pinned_host", k))(key)
    buffer_avals = closed.out_avals[:2]
    batch_avals = closed.out_avals[-2:]
    assert [a.memory_space for a in buffer_avals] == [placement.HOST] * 2
    assert [a.memory_space for a in batch_avals] == [placement.DEVICE] * 2


def _dqn_updates(memory_kind: str, tmp_path=None):
    """Seeds 0 and 1 of the DQN smoke config after 2 chunks of 3 updates (learning starts at update 4), run as the
    RL loop runs them (init jitted to the state's shardings, vmapped chunks, state donated), with the shardings
    given each leaf's memory kind (`placement.with_memory_kinds`); the state also makes an Orbax round trip."""
    config = dqn_config.get_config("smoke")
    config.placement.replay = memory_kind
    agent = dqn.make_agent(config, envs.make_env(config.env_name))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    mesh = parallel.make_mesh()
    abstract, kinds = placement.memory_kinds(loop.init_runs(agent), keys, {})
    assert jax.tree.structure(abstract) == jax.tree.structure(jax.eval_shape(loop.init_runs(agent), keys, {}))
    shardings = placement.with_memory_kinds(loop.state_shardings(abstract, mesh), kinds)
    state = jax.jit(loop.init_runs(agent), out_shardings=shardings)(keys, {})
    chunk = jax.jit(
        jax.vmap(functools.partial(run_updates_masked, agent, length=3), in_axes=(0, None)),
        in_shardings=(shardings, parallel.replicated(mesh)),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=0,
    )
    state, _ = chunk(state, np.int32(3))
    if tmp_path is not None:  # a checkpoint restores each leaf into the memory kind of its sharding
        ckpt = checkpoint.Checkpointer(str(tmp_path / memory_kind))
        ckpt.save(3, state, wait=True)
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        state = ckpt.restore_latest(target)[1]
        ckpt.close()
    state, metrics = chunk(state, np.int32(3))
    assert np.isfinite(np.asarray(metrics["loss"])[:, -1]).all()  # learning has started
    return state, kinds


def test_dqn_with_replay_in_pinned_host_memory_trains_the_same_parameters(tmp_path):
    on_device, device_kinds = _dqn_updates("device")
    on_host, host_kinds = _dqn_updates("pinned_host", tmp_path)
    assert _equal((on_device.train_state, on_device.target_params), (on_host.train_state, on_host.target_params))
    assert _equal(on_device.replay, on_host.replay)
    assert {x.sharding.memory_kind for x in jax.tree.leaves(on_host.replay.data)} == {"pinned_host"}
    assert {x.sharding.memory_kind for x in jax.tree.leaves(on_device.replay.data)} == {"device"}
    # Only the buffer's rows move: the rest of the state, and the write position and size, stay in device memory.
    assert set(jax.tree.leaves(host_kinds.replay.data)) == {"pinned_host"}
    others = host_kinds.replace(replay=host_kinds.replay.replace(data=None))
    assert set(jax.tree.leaves(others)) == set(jax.tree.leaves(device_kinds)) == {"device"}


def test_a_program_that_drops_the_buffers_memory_kind_is_refused_in_one_line():
    # Jitted with shardings that do not keep its memory kind, the buffer would reach the update in device memory.
    config = dqn_config.get_config("smoke")
    config.placement.replay = "pinned_host"
    agent = dqn.make_agent(config, envs.make_env(config.env_name))
    abstract = jax.eval_shape(loop.init_runs(agent), jax.random.split(jax.random.PRNGKey(0), 2), {})
    with pytest.raises(UserError) as error:
        jax.eval_shape(jax.vmap(agent.update), abstract)
    message = str(error.value)
    assert "\n" not in message and "config.placement.replay='pinned_host'" in message and "device memory" in message


# ---- the image training set and evaluation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_runs(digits, tmp_path_factory):
    """The classifier (a small MLP, 2 seeds, 1 epoch of 300 digits, rotation and balanced batches on) run with the
    default placement and with the training set on the host and evaluation on the CPU."""
    results = {}
    for data, evaluation in (("device", "same"), ("host", "cpu")):
        config = classifier_config.get_config("digits,mlp,smoke")
        config.hidden_sizes, config.num_epochs, config.num_seeds, config.train_examples = (32,), 1, 2, 300
        config.augment_rotate, config.balanced_sampling = 10.0, True
        config.placement.data, config.placement.eval = data, evaluation
        results[data] = classifier.run(config, str(tmp_path_factory.mktemp(data)), digits)
    return results


def test_classifier_with_data_on_the_host_and_evaluation_on_the_cpu_gives_the_same_numbers(mlp_runs):
    (state_device, device), (state_host, host) = mlp_runs["device"], mlp_runs["host"]
    assert host["params_sha256"] == device["params_sha256"]
    assert _equal(state_host, state_device)
    for name in ("test/accuracy_mean", "test/loss_mean", "test/macro_f1_mean", "per_seed/test/accuracy"):
        assert host[name] == device[name]


def test_the_training_set_and_evaluation_are_put_where_the_keys_say():
    config = classifier_config.get_config("digits,smoke")
    mesh = parallel.make_mesh()
    host_set = (np.zeros((4, 8, 8, 1), np.float32), np.arange(4, dtype=np.int32))
    assert all(isinstance(x, jax.Array) for x in placement.put_data(config, host_set, mesh))
    config.placement.data = "host"
    assert placement.put_data(config, host_set, mesh) is host_set  # left in host memory as it was given

    params = {"w": jnp.ones((3, 2))}
    assert placement.to_eval_device(config, params) is params  # "same": not even copied
    config.placement.eval = "cpu"
    moved = placement.to_eval_device(config, params)
    assert moved["w"].devices() == {CPU} and moved["w"].committed
    images = placement.eval_arrays(config, np.ones((4, 3), np.float32), mesh)
    assert images.devices() == {CPU}
    seen = []
    placement.on_eval_device(config, lambda p, x: seen.append((p["w"].devices(), x.devices())))(params, images)
    assert seen == [({CPU}, {CPU})]


def test_graph_eval_sets_solved_on_the_cpu_give_the_same_objectives(tmp_path):
    config = s2v_dqn_config.get_config("smoke")
    agent = graph_trainer.make_agent(config, envs.make_env(config.env_name))
    params = jax.jit(jax.vmap(agent.init))(jax.random.split(jax.random.PRNGKey(0), 2)).train_state.params  # untrained
    graphs = graph_trainer.load_or_make_eval_set(str(tmp_path), config.env_name, 3, config.eval_set_seed).graphs
    same = graph_trainer.agent_objectives(config.env_name, agent.act, placement.to_eval_device(config, params), graphs)
    config.placement.eval = "cpu"
    on_cpu = placement.to_eval_device(config, jax.device_get(params))
    assert {d for leaf in jax.tree.leaves(on_cpu) for d in leaf.devices()} == {CPU}
    np.testing.assert_array_equal(graph_trainer.agent_objectives(config.env_name, agent.act, on_cpu, graphs), same)


def test_on_four_devices_evaluation_leaves_the_mesh_for_the_cpu_device():
    # 4 faked CPU devices: training state replicated on all four, the evaluation's copy on the CPU device alone.
    code = """
import jax, jax.numpy as jnp, numpy as np
from lepton_jax import parallel, placement
from lepton_jax.vision.configs import classifier as classifier_config
mesh = parallel.make_mesh()
params = jax.device_put({"w": jnp.arange(6.0)}, parallel.replicated(mesh))
config = classifier_config.get_config("digits,smoke")
assert len(placement.to_eval_device(config, params)["w"].devices()) == 4
config.placement.eval = "cpu"
moved = placement.to_eval_device(config, params)
assert moved["w"].devices() == {jax.devices("cpu")[0]}, moved["w"].devices()
predict = jax.jit(lambda p, x: p["w"] * x)
out = placement.on_eval_device(config, predict)(params, np.ones(6, np.float32))
assert out.devices() == {jax.devices("cpu")[0]} and np.array_equal(out, np.arange(6.0))
print("ok", jax.device_count())
"""
    result = run_python(["-c", code], env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok", "4"]
