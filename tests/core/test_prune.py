"""Magnitude pruning (`lepton_jax/techniques/prune.py`): the schedule on a worked example, the masks' exact counts
(per leaf, global, ties) against hand counts, a short training whose pruned weights stay exactly zero with monotone
masks, resume through the project's checkpointer bit for bit, the composition the optimiser factory uses, and the
one-line errors."""

import functools

import chex
import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lepton_jax import checkpoint
from lepton_jax.errors import UserError
from lepton_jax.techniques import prune

KERNELS = ("params/Dense_0/kernel", "params/Dense_1/kernel", "params/Dense_2/kernel")
SIZES = (6 * 16, 16 * 16, 16 * 3)  # the MLP's kernels: 400 weights in all
# The training runs' schedule: target 0.75, events at steps 2, 5, 8 and 11 (end).
TARGET, BEGIN, END, EVERY = 0.75, 2, 11, 3


def hand_sparsity(step: int) -> float:
    """Zhu & Gupta's s_t for the training runs, worked by hand: (1 - p)^3 is 1, 8/27, 1/27, 0 at the events."""
    if step < 5:
        return 0.0  # before begin, and s_i = 0 at the first event (step 2)
    if step < 8:
        return TARGET * (1 - 8 / 27)
    if step < 11:
        return TARGET * (1 - 1 / 27)
    return TARGET


def test_schedule_on_a_worked_example():
    steps = jnp.arange(0, 61)
    values = np.asarray(jax.vmap(lambda t: prune.schedule(t, 0.8, 10, 50, 10))(steps))
    # s = 0.8 (1 - (1 - p)^3), p = (last event - 10) / 40, constant between events.
    expected = {0: 0.0, 9: 0.0, 10: 0.0, 15: 0.0, 20: 0.4625, 29: 0.4625, 30: 0.7, 39: 0.7, 40: 0.7875}
    expected |= {49: 0.7875, 50: 0.8, 60: 0.8}
    for step, value in expected.items():
        assert values[step] == pytest.approx(value, abs=1e-6), step
    assert float(prune.schedule(10**6, 0.8, 10, 50, 10)) == pytest.approx(0.8)
    events = jax.vmap(lambda t: prune.is_event(t, 10, 50, 10))(steps)
    assert set(np.flatnonzero(np.asarray(events))) == {10, 20, 30, 40, 50}

    # s_i = 0.2: 0.8 - 0.6 (1 - p)^3; still 0 before begin.
    assert float(prune.schedule(5, 0.8, 10, 50, 10, initial_sparsity=0.2)) == 0.0
    assert float(prune.schedule(10, 0.8, 10, 50, 10, initial_sparsity=0.2)) == pytest.approx(0.2)
    assert float(prune.schedule(25, 0.8, 10, 50, 10, initial_sparsity=0.2)) == pytest.approx(0.546875)

    # An end off the grid is an event of its own: events 0, 10, 20, 25; 0.5 (1 - (1 - p)^3), p = 0.4, 0.8.
    off_grid = {0: 0.0, 9: 0.0, 10: 0.392, 19: 0.392, 20: 0.496, 24: 0.496, 25: 0.5}
    for step, value in off_grid.items():
        assert float(prune.schedule(step, 0.5, 0, 25, 10)) == pytest.approx(value, abs=1e-6), step
    events = jax.vmap(lambda t: prune.is_event(t, 0, 25, 10))(jnp.arange(40))
    assert set(np.flatnonzero(np.asarray(events))) == {0, 10, 20, 25}

    # begin == end: one cut, to the target.
    assert [float(prune.schedule(t, 0.5, 7, 7, 3)) for t in (6, 7, 8)] == [0.0, 0.5, 0.5]


def one_shot(params, grads, sparsity, scope="layer", inner=None, **kwargs):
    """One update of a pruning that cuts to `sparsity` at step 0; the new params, updates and state."""
    inner = optax.identity() if inner is None else inner  # the update is the "gradient" itself
    tx = prune.magnitude_pruning(inner, sparsity, 0, 0, 1, scope, **kwargs)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    return optax.apply_updates(params, updates), updates, state


def zeros_like(tree):
    return jax.tree.map(jnp.zeros_like, tree)


def test_layer_and_global_scope_count_exactly_and_differ_on_layers_of_different_scales():
    # Layer "small" holds 1..16, layer "large" 100..1600.
    params = {"small": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)}}
    params["large"] = {"kernel": 100 * jnp.arange(1.0, 17.0).reshape(4, 4)}
    layer, _, _ = one_shot(params, zeros_like(params), 0.5, "layer")
    # Each layer loses its 8 smallest: the first two rows.
    for name in ("small", "large"):
        kernel = np.asarray(layer[name]["kernel"])
        np.testing.assert_array_equal(kernel[:2], 0)
        np.testing.assert_array_equal(kernel[2:], np.asarray(params[name]["kernel"])[2:])
    whole, _, _ = one_shot(params, zeros_like(params), 0.5, "global")
    # 16 of 32 together: all of the small layer, none of the large.
    np.testing.assert_array_equal(whole["small"]["kernel"], 0)
    np.testing.assert_array_equal(whole["large"]["kernel"], params["large"]["kernel"])


def test_ties_still_prune_exactly_the_required_count():
    params = {"a": {"kernel": jnp.ones((4, 4))}, "b": {"kernel": jnp.ones((2, 3))}}
    layer, _, state = one_shot(params, zeros_like(params), 0.3, "layer")
    # floor(0.3 * 16) = 4 and floor(0.3 * 6) = 1: a threshold at 1.0 would prune all or none.
    assert int(np.sum(layer["a"]["kernel"] == 0)) == 4 and int(np.sum(layer["b"]["kernel"] == 0)) == 1
    assert int(np.sum(~state.masks["a"]["kernel"])) == 4
    whole, _, _ = one_shot(params, zeros_like(params), 0.3, "global")
    assert sum(int(np.sum(whole[k]["kernel"] == 0)) for k in "ab") == 6  # floor(0.3 * 22)


def test_magnitudes_are_those_after_the_update():
    params = {"Dense_0": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
    grads = {"Dense_0": {"kernel": jnp.array([[10.0, 0.0], [0.0, 0.0]])}}
    new, _, _ = one_shot(params, grads, 0.5)
    # 1 + 10 = 11 is the largest after the step: 2 and 3 go.
    np.testing.assert_array_equal(new["Dense_0"]["kernel"], [[11.0, 0.0], [0.0, 4.0]])


def test_a_pruned_weight_is_never_revived():
    # s_i = 0.5 at step 0, s_f = 0.75 at step 1; the update adds the "gradient".
    tx = prune.magnitude_pruning(optax.identity(), 0.75, 0, 1, 1, initial_sparsity=0.5)
    update = jax.jit(tx.update)
    params = {"Dense_0": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
    state = tx.init(params)
    updates, state = update(zeros_like(params), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["Dense_0"]["kernel"], [[0.0, 0.0], [3.0, 4.0]])  # the 2 smallest of 4
    # The step would make the pruned 1 the largest weight (100): it stays pruned, and 3 goes with it (3 of 4).
    grads = {"Dense_0": {"kernel": jnp.array([[100.0, 0.0], [0.0, 0.0]])}}
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["Dense_0"]["kernel"], [[0.0, 0.0], [0.0, 4.0]])
    np.testing.assert_array_equal(state.masks["Dense_0"]["kernel"], [[False, False], [False, True]])


def test_only_kernels_are_pruned_and_the_rest_get_the_inner_updates_bit_for_bit():
    rng = np.random.default_rng(3)
    shapes = {
        "Dense_0": {"kernel": (5, 4), "bias": (4,)},
        "Conv_0": {"kernel": (3, 3, 2, 4), "bias": (4,)},
        "BatchNorm_0": {"scale": (4,), "bias": (4,)},
        "Embed_0": {"embedding": (10, 4)},
        "Odd_0": {"kernel": (7,)},  # one axis: not a dense or conv kernel
    }
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    params = treedef.unflatten([jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in leaves])
    grads = jax.tree.map(lambda p: 0.01 * jnp.sign(p), params)
    inner = optax.adam(0.1)
    new, updates, state = one_shot(params, grads, 0.6, "layer", inner=optax.adam(0.1))
    inner_updates, _ = inner.update(grads, inner.init(params), params)
    pruned = {("Dense_0", "kernel"): 12, ("Conv_0", "kernel"): 43}  # floor(0.6 * 20), floor(0.6 * 72)
    for path, value in jax.tree_util.tree_flatten_with_path(new)[0]:
        name = tuple(p.key for p in path)
        mask = state.masks[name[0]][name[1]]
        if name in pruned:
            assert int(np.sum(np.asarray(value) == 0)) == pruned[name] == int(np.sum(~np.asarray(mask)))
        else:
            assert mask.shape == () and bool(mask)
            np.testing.assert_array_equal(updates[name[0]][name[1]], inner_updates[name[0]][name[1]])
            assert np.all(np.asarray(value) != 0)
    assert prune.sparsity(new).per_leaf == {
        "Conv_0/kernel": pytest.approx(43 / 72),
        "Dense_0/kernel": pytest.approx(12 / 20),
    }


def test_sparsity_matches_a_hand_count():
    params = {
        "params": {
            "Dense_0": {"kernel": jnp.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]]), "bias": jnp.zeros(3)},
            "Dense_1": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "bias": jnp.zeros(2)},
        }
    }
    report = prune.sparsity(params)
    assert report.overall == pytest.approx(3 / 10)  # the biases' zeros do not count
    assert report.per_leaf == {"params/Dense_0/kernel": 0.5, "params/Dense_1/kernel": 0.0}
    everything = prune.sparsity(params, prunable=lambda name, leaf: True)
    assert everything.overall == pytest.approx(8 / 15)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


MODEL = MLP()
INPUTS = jax.random.normal(jax.random.key(1), (32, 6))
LABELS = jax.random.randint(jax.random.key(2), (32,), 0, 3)


def make_tx(scope: str) -> optax.GradientTransformation:
    return prune.magnitude_pruning(optax.adam(1e-2), TARGET, BEGIN, END, EVERY, scope)


def initial_state(scope: str):
    params = MODEL.init(jax.random.key(0), INPUTS)
    return params, make_tx(scope).init(params)


def batch_loss(params, index):
    """The MLP's loss on a different half of the data at each step `index`."""
    rows = jax.random.permutation(jax.random.fold_in(jax.random.key(4), index), 32)[:16]
    logits = MODEL.apply(params, INPUTS[rows])
    return optax.softmax_cross_entropy_with_integer_labels(logits, LABELS[rows]).mean()


TRACES = {"layer": [], "global": []}  # one entry per trace of each scope's step


def make_step(tx: optax.GradientTransformation, traces: list | None = None):
    @jax.jit
    def step(params, opt_state, index):
        if traces is not None:
            traces.append(index)
        updates, opt_state = tx.update(jax.grad(batch_loss)(params, index), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


@functools.cache
def train_step(scope: str):
    return make_step(make_tx(scope), TRACES[scope])


def train(scope: str, params, opt_state, steps: range) -> list:
    """`(params, opt_state)` after each of `steps`."""
    out = []
    for index in steps:
        params, opt_state = train_step(scope)(params, opt_state, index)
        out.append((params, opt_state))
    return out


@functools.cache
def trajectory(scope: str) -> list:
    return train(scope, *initial_state(scope), range(15))


def kernels(tree) -> list[np.ndarray]:
    return [np.asarray(tree["params"][f"Dense_{i}"]["kernel"]) for i in range(3)]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_training_keeps_pruned_weights_at_zero_with_monotone_masks_and_exact_counts(scope):
    previous = [np.ones(n, bool).reshape(k.shape) for n, k in zip(SIZES, kernels(initial_state(scope)[0]))]
    for step, (params, opt_state) in enumerate(trajectory(scope)):
        masks = kernels(opt_state.masks)
        weights = kernels(params)
        level = hand_sparsity(step)
        for mask, kernel, old in zip(masks, weights, previous):
            np.testing.assert_array_equal(kernel[~mask], 0)  # pruned: exactly zero, at every step
            assert np.all(kernel[mask] != 0)  # living weights are never exactly zero here
            assert not np.any(mask & ~old)  # monotone: nothing pruned comes back
        zeros = [int(np.sum(k == 0)) for k in weights]
        if scope == "layer":
            assert zeros == [int(level * n) for n in SIZES], step
        else:
            assert sum(zeros) == int(level * sum(SIZES)), step
        previous = masks
        for name in ("Dense_0", "Dense_1", "Dense_2"):
            assert opt_state.masks["params"][name]["bias"].shape == ()
            assert np.any(np.asarray(params["params"][name]["bias"]) != 0)  # trained from zero, never pruned
    assert prune.sparsity(trajectory(scope)[-1][0]).overall == pytest.approx(300 / 400)


def test_global_and_layer_training_differ_and_zero_sparsity_changes_nothing():
    layer_zeros = [int(np.sum(k == 0)) for k in kernels(trajectory("layer")[-1][0])]
    global_zeros = [int(np.sum(k == 0)) for k in kernels(trajectory("global")[-1][0])]
    assert layer_zeros == [72, 192, 36]  # floor(0.75 n) each
    assert sum(global_zeros) == 300 and global_zeros != layer_zeros  # the first layer's weights are larger

    # Before the first cut and at it (s = 0 at step 2), the updates are Adam's, bit for bit.
    params, _ = initial_state("layer")
    adam = optax.adam(1e-2)
    step, state = make_step(adam), adam.init(params)
    for index in range(3):
        params, state = step(params, state, index)
    chex.assert_trees_all_equal(trajectory("layer")[2][0], params)
    chex.assert_trees_all_equal(trajectory("layer")[2][1].inner, state)


def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    params, opt_state = initial_state("layer")
    halfway = train("layer", params, opt_state, range(6))[-1]  # through the events at 2 and 5
    ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
    ckpt.save(6, {"params": halfway[0], "opt_state": halfway[1]}, wait=True)
    ckpt.close()
    template = {"params": params, "opt_state": opt_state}
    step, restored, _ = checkpoint.Checkpointer(str(tmp_path / "checkpoints")).restore_latest(
        jax.eval_shape(lambda: template)
    )
    assert step == 6 and int(restored["opt_state"].count) == 6
    resumed = train("layer", restored["params"], restored["opt_state"], range(6, 15))[-1]
    uninterrupted = trajectory("layer")[-1]
    chex.assert_trees_all_equal(resumed, uninterrupted)
    assert int(np.sum(kernels(resumed[0])[1] == 0)) == 192  # the events after the resume still cut
    assert len(TRACES["layer"]) == 1  # the restored state did not make the step retrace


def test_the_factory_composition_flatten_multisteps_and_seeds():
    # As `optim.make` composes it: pruning outside `optax.flatten`, inside `optax.MultiSteps`, vmapped over seeds.
    tx = prune.magnitude_pruning(optax.flatten(optax.adam(1e-2)), 0.5, 1, 1, 1)
    tx = optax.MultiSteps(tx, every_k_schedule=2).gradient_transformation()
    params = jax.vmap(lambda k: MODEL.init(k, INPUTS))(jax.random.split(jax.random.key(0), 2))

    @jax.jit
    @jax.vmap
    def run(params):
        def micro_step(carry, index):
            params, state = carry
            grads = jax.grad(lambda p: jnp.mean(MODEL.apply(p, INPUTS * index) ** 2))(params)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(micro_step, (params, tx.init(params)), jnp.arange(1.0, 7.0))[0][0]

    final = run(params)
    # Six micro-steps are three optimiser steps; the cut at optimiser step 1: half of each kernel, in each seed.
    for seed in range(2):
        for kernel, n in zip(kernels(jax.tree.map(lambda x, s=seed: x[s], final)), SIZES):
            assert int(np.sum(kernel == 0)) == n // 2


@pytest.mark.parametrize(
    "arguments,named",
    [
        ({"target_sparsity": 1.0}, "target_sparsity=1.0"),
        ({"target_sparsity": -0.1}, "target_sparsity=-0.1"),
        ({"initial_sparsity": 0.9}, "initial_sparsity=0.9"),
        ({"begin_step": 20}, "end_step=10"),
        ({"frequency": 0}, "frequency=0"),
        ({"scope": "row"}, "scope='row'"),
    ],
)
def test_a_bad_value_is_one_user_error_line(arguments, named):
    values = {"target_sparsity": 0.5, "begin_step": 0, "end_step": 10, "frequency": 1, "scope": "layer"} | arguments
    with pytest.raises(UserError) as error:
        prune.magnitude_pruning(optax.adam(1e-3), **values)
    message = str(error.value)
    assert "\n" not in message and named in message and "must be" in message


def test_settings_from_the_config_keys():
    config = ml_collections.ConfigDict({"prune_sparsity": 0.0, "prune_begin": 0.1, "prune_end": 0.75})
    assert prune.settings(config, 1000) is None  # off
    config.prune_sparsity = 0.9
    config.prune_every = 50
    assert prune.settings(config, 1000) == {
        "target_sparsity": 0.9,
        "begin_step": 100,
        "end_step": 750,
        "frequency": 50,
        "scope": "layer",
    }
    config.prune_begin = 0.8
    with pytest.raises(UserError) as error:
        prune.settings(config, 1000)
    message = str(error.value)
    assert "\n" not in message and "config.prune_begin=0.8" in message and "config.prune_end=0.75" in message


def sorts_by_place(jaxpr, inside: bool = False, counts: dict | None = None) -> dict:
    """How many `sort` equations a jaxpr holds inside a `cond`'s branches and outside any."""
    counts = {"in cond": 0, "outside": 0} if counts is None else counts
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "sort":
            counts["in cond" if inside else "outside"] += 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            sorts_by_place(sub, inside or eqn.primitive.name == "cond", counts)
    return counts


def test_under_vmap_the_ranking_runs_only_at_events_and_each_seed_prunes_as_alone():
    """Seeds vmapped: the pruning cond keeps an unbatched predicate (a real cond in the program, not a select that
    ranks the weights at every step), and every seed's trajectory equals its own unvmapped one."""
    tx = make_tx("layer")
    inits = [MODEL.init(jax.random.key(s), INPUTS) for s in range(2)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *inits)

    def loss(params, index):  # no permutation here: its sort would count as a ranking outside the cond
        logits = MODEL.apply(params, INPUTS * (1.0 + 0.1 * index))
        return optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()

    def one(params, opt_state, index):
        updates, opt_state = tx.update(jax.grad(loss)(params, index), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    batched = jax.jit(jax.vmap(one, in_axes=(0, 0, None)))
    jaxpr = jax.make_jaxpr(jax.vmap(one, in_axes=(0, 0, None)))(stacked, jax.vmap(tx.init)(stacked), 0)
    sorts = sorts_by_place(jaxpr.jaxpr)
    assert sorts["in cond"] > 0 and sorts["outside"] == 0  # the ranking runs only in the cond's branch
    params, opt_state = stacked, jax.vmap(tx.init)(stacked)
    single = [(p, tx.init(p)) for p in inits]
    step = jax.jit(one)
    for index in range(12):
        params, opt_state = batched(params, opt_state, index)
        single = [step(p, o, index) for p, o in single]
    for s in range(2):
        for a, b in zip(kernels(jax.tree.map(lambda x, s=s: x[s], params)), kernels(single[s][0])):
            np.testing.assert_allclose(a, b, atol=1e-6)
            assert np.array_equal(a == 0, b == 0)
    assert prune.sparsity(params).overall > 0
