"""Neural architecture search (`agents/nas/`): the encoding, the exactness of the masked super-network, the
controller's probabilities and its REINFORCE update, random search's and evolution's proposals, and the trainer end
to end (a smoke run of the three methods, resumed == uninterrupted, launch-time checks)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.configs import nas as nas_config
from agents.nas import children, search, trainer
from agents.nas import controller as controller_lib
from agents.nas import space as space_lib
from agents.nas.space import Architecture, SearchSpace
from lepton_jax.errors import UserError

SMALL = SearchSpace(3, (2, 4), (1, 3))  # 10 decisions, 548 networks


def test_encoding_round_trips_and_counts_the_space():
    """decode(encode(a)) == a; encode(decode(v)) == canonical(v); the canonical vectors of a small space, every
    vector enumerated, are exactly `num_architectures` distinct ones."""
    space = SearchSpace()
    arch = Architecture((16, 64, 8), (5, 1, 3), ((), (0,), (0, 1)))
    vector = space_lib.encode(space, arch)
    assert vector.shape == (15,) and space.length == 1 + 2 * 4 + 6
    # depth 3 -> 2; layer 0: 16 (1), 5 (2); layer 1: 64 (3), 1 (0), the image; layer 2: 8 (0), 3 (1), the image and
    # layer 0; layer 3: all 0 (inactive)
    np.testing.assert_array_equal(vector, [2, 1, 2, 3, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    assert space_lib.decode(space, vector) == arch
    assert space_lib.describe(arch) == "conv5x5-16 | conv1x1-64 +image | conv3x3-8 +image+L0"
    # conv0 25*1*16+16, conv1 1*(16+1)*64+64, conv2 9*(64+1+16)*8+8, head 8*10+10
    assert space_lib.num_params(arch, 10) == 416 + 1152 + 5840 + 90
    with pytest.raises(UserError, match="layer 1 reads anchors 0 .. 0"):
        space_lib.encode(space, Architecture((8, 8), (1, 1), ((), (1,))))

    draws = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (500, 15), 0, space.num_choices))
    for v in draws:
        canonical = np.asarray(space_lib.canonical(space, jnp.asarray(v)))
        np.testing.assert_array_equal(space_lib.encode(space, space_lib.decode(space, v)), canonical)
        assert np.all(canonical[~np.asarray(space_lib.active(space, jnp.asarray(v)))] == 0)

    grids = np.stack(np.meshgrid(*[np.arange(n) for n in SMALL.num_choices], indexing="ij"), -1).reshape(-1, 10)
    distinct = np.unique(np.asarray(space_lib.canonical(SMALL, jnp.asarray(grids))), axis=0)
    # depth 1: 2*2; depth 2: x (2*2*2); depth 3: x (2*2*4)
    assert len(distinct) == SMALL.num_architectures() == 4 + 4 * 8 + 4 * 8 * 16


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8, 1))


def test_masked_super_network_equals_the_network_built_directly(images):
    """For random architectures of the default space: the masked super-network's logits equal `ChildNet`'s with the
    weights copied out (`child_params`, the shapes of `ChildNet`'s own init); the gradient of the loss is the small
    network's gradient where a weight is used and 0 elsewhere (so training is the same too)."""
    space = SearchSpace()
    model = children.SuperNet(space)
    labels = jnp.arange(6) % 10
    archs = np.array(space_lib.uniform(space, jax.random.PRNGKey(2), 2))
    archs[0] = space_lib.encode(space, Architecture((64, 8, 32, 16), (5, 3, 1, 5), ((), (0,), (0, 1), (1, 2))))

    def loss(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    # The architecture is traced: one compile for every child.
    init = jax.jit(lambda key, v: children.init_child(model, key, v, (8, 8, 1)))
    super_grads = jax.jit(jax.grad(lambda p, v: loss(model.apply(p, images, v))))
    super_logits = jax.jit(lambda p, v: model.apply(p, images, v))
    for i, vector in enumerate(archs):
        arch, vector = space_lib.decode(space, vector), jnp.asarray(vector)
        params = init(jax.random.PRNGKey(i), vector)
        small = children.child_params(params, space, arch)
        net = children.ChildNet(arch)
        shapes = lambda tree: jax.tree.map(jnp.shape, tree)  # noqa: E731
        assert shapes(small) == shapes(jax.eval_shape(net.init, jax.random.PRNGKey(0), images))
        np.testing.assert_allclose(super_logits(params, vector), net.apply(small, images), atol=1e-5)
        big_grads = super_grads(params, vector)
        small_grads = jax.jit(jax.grad(lambda p, n=net: loss(n.apply(p, images))))(small)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
            children.child_params(big_grads, space, arch),
            small_grads,
        )
        total = lambda tree: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))  # noqa: E731
        assert total(big_grads) == pytest.approx(total(small_grads), rel=1e-4)


def test_a_child_starts_at_its_own_fan_ins():
    """Each kernel is drawn with std sqrt(2 / fan-in) of the child itself (the taps and channels it reads)."""
    space = SearchSpace()
    arch = Architecture((64, 64), (5, 3), ((), (0,)))
    init = jax.jit(lambda key, v: children.init_child(children.SuperNet(space), key, v, (8, 8, 1)))
    params = init(jax.random.PRNGKey(0), jnp.asarray(space_lib.encode(space, arch)))
    small = children.child_params(params, space, arch)["params"]
    for name, fan_in in (("conv0", 25 * 1), ("conv1", 9 * 65), ("head", 64)):
        assert float(jnp.std(small[name]["kernel"])) == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)


def _lstm_step(p, carry, x):
    """Flax's `LSTMCell` by hand: gates i, f, g, o from the input and hidden kernels (the hidden ones biased)."""
    c, h = carry
    gate = lambda name: x @ p[f"i{name}"]["kernel"] + h @ p[f"h{name}"]["kernel"] + p[f"h{name}"]["bias"]  # noqa: E731
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c = sigmoid(gate("f")) * c + sigmoid(gate("i")) * np.tanh(gate("g"))
    h = sigmoid(gate("o")) * np.tanh(c)
    return (c, h), h


def test_controller_log_prob_equals_a_hand_computation():
    """The log-probability of a sampled network: the LSTM stepped by hand in numpy over its decisions, each head's
    log-softmax at the choice taken, summed over the active decisions only."""
    model = controller_lib.Controller(SMALL, hidden=8)
    params = model.init(jax.random.PRNGKey(0), jax.random.PRNGKey(0))
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
    archs = jax.jit(lambda key: controller_lib.sample(model, params, key, 16))(jax.random.PRNGKey(3))
    assert len({tuple(a) for a in np.asarray(archs)}) > 5  # various depths and choices
    log_probs, entropies = jax.jit(lambda a: controller_lib.log_prob(model, params, a))(archs)
    for arch, got, got_entropy in zip(np.asarray(archs), np.asarray(log_probs), np.asarray(entropies)):
        carry, x = (np.zeros(8), np.zeros(8)), p["start"]
        total = entropy = 0.0
        depth = arch[0] + 1
        for decision, choice in zip(SMALL.decisions, arch):
            carry, h = _lstm_step(p["lstm"], carry, x)
            head = p[f"head_{decision.kind}"]
            logits = h @ head["kernel"] + head["bias"]
            log_softmax = logits - np.log(np.exp(logits).sum())
            if decision.layer < depth:
                total += log_softmax[choice]
                entropy -= np.sum(np.exp(log_softmax) * log_softmax)
            else:
                assert choice == 0  # canonical: inactive decisions are 0
            x = p[f"embed_{decision.kind}"]["embedding"][choice]
        assert got == pytest.approx(total, abs=1e-5)
        assert got_entropy == pytest.approx(entropy, abs=1e-5)


def test_reinforce_moves_the_controller_toward_the_rewarded_choice():
    """Reward 1 for the deepest networks, 0 otherwise: from about 1/3, the policy's probability of depth 3 passes 0.9
    within 40 updates of 16 samples; the baseline is the first batch's mean, then its moving average."""
    model = controller_lib.Controller(SMALL, hidden=8)
    state = controller_lib.init(model, optax.adam(0.05), jax.random.PRNGKey(0))

    @jax.jit
    def step(state, key):
        archs = controller_lib.sample(model, state.train_state.params, key, 16)
        rewards = (archs[:, 0] == 2).astype(jnp.float32)
        new, metrics = controller_lib.update(model, state, archs, rewards, 0.0, 0.8)
        return new, rewards.mean(), metrics

    def p_deepest(state):
        deepest = jnp.zeros(SMALL.length, jnp.int32).at[0].set(2)
        _, log_probs, _ = model.apply(state.train_state.params, jax.random.PRNGKey(0), deepest)
        return float(jnp.exp(log_probs[0]))

    assert abs(p_deepest(state) - 1 / 3) < 0.1
    means = []
    for t in range(40):
        state, mean, metrics = step(state, jax.random.PRNGKey(100 + t))
        means.append(float(mean))
        if t == 0:
            assert float(metrics["train/baseline"]) == pytest.approx(means[0])
            assert float(state.baseline) == pytest.approx(means[0])
        if t == 1:
            assert float(state.baseline) == pytest.approx(0.8 * means[0] + 0.2 * means[1])
    assert p_deepest(state) > 0.9


def test_random_search_samples_every_decision_uniformly():
    """20,000 draws: the depth, and each active decision of a layer, are uniform over their values (chi-square at
    p > 0.001), and the inactive ones are 0."""
    from scipy import stats

    space = SearchSpace()
    draws = np.asarray(space_lib.uniform(space, jax.random.PRNGKey(5), 20_000))
    mask = np.asarray(space_lib.active(space, jnp.asarray(draws)))
    assert np.all(draws[~mask] == 0)
    for position, choices in enumerate(space.num_choices):
        counts = np.bincount(draws[mask[:, position], position], minlength=choices)
        assert stats.chisquare(counts).pvalue > 1e-3, (space.decisions[position], counts)
    assert mask[:, space.decisions.index(space_lib.Decision("filters", 3))].mean() == pytest.approx(0.25, abs=0.02)


def test_evolution_mutates_the_tournament_winner():
    """Before `population` children are evaluated, proposals are random; then, with tournaments of the whole
    population, every child is one mutation (one active decision changed) of the population's best member, and the
    population is the newest children, not the oldest."""
    space = SearchSpace()
    history = search.History.create(64, space.length)
    old = space_lib.uniform(space, jax.random.PRNGKey(0), 8)
    history = history.record(old, jnp.linspace(0.1, 0.9, 8).at[0].set(0.99))  # the oldest is the best
    evolve = jax.jit(search.evolve, static_argnums=(0, 3, 4, 5))
    early = evolve(space, history, jax.random.PRNGKey(1), 4, 16, 16)
    assert not any(np.array_equal(a, b) for a in np.asarray(early) for b in np.asarray(old))  # random draws
    new = space_lib.uniform(space, jax.random.PRNGKey(2), 16)
    new = new.at[5].set(space_lib.encode(space, Architecture((8, 16, 32), (1, 3, 5), ((), (0,), (1,)))))
    rewards = jnp.linspace(0.2, 0.6, 16).at[5].set(0.95)
    history = history.record(new, rewards)
    proposed = np.asarray(evolve(space, history, jax.random.PRNGKey(3), 50, 16, 16))
    best = np.asarray(new[5])

    def neighbours(arch):
        out = set()
        active = np.asarray(space_lib.active(space, jnp.asarray(arch)))
        for position in np.flatnonzero(active):
            for value in range(space.num_choices[position]):
                if value != arch[position]:
                    changed = arch.copy()
                    changed[position] = value
                    out.add(tuple(np.asarray(space_lib.canonical(space, jnp.asarray(changed)))))
        return out

    assert {tuple(a) for a in proposed} <= neighbours(best)
    assert len({tuple(a) for a in proposed}) > 10


# ---- The trainer -----------------------------------------------------------------------------------------------


def smoke_config():
    return nas_config.get_config("compare,smoke")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(workdir, results) of an uninterrupted smoke run of the three methods."""
    from tests.conftest import blank_figures

    workdir = str(tmp_path_factory.mktemp("nas") / "run")
    with pytest.MonkeyPatch.context() as patch:
        blank_figures(patch)
        return workdir, trainer.train_and_evaluate(smoke_config(), workdir)


def test_smoke_run_reports_each_method(smoke_run):
    workdir, results = smoke_run
    config = smoke_config()
    for method in search.METHODS:
        assert results[f"{method}/search/children_evaluated"] == config.num_epochs * config.children_per_step
        accuracies = results[f"{method}/per_seed/test/accuracy"]
        assert len(accuracies) == config.num_seeds and all(0 <= a <= 1 for a in accuracies)
        best = results[f"{method}/per_seed/search/best_val_accuracy"]
        assert results[f"{method}/search/best_val_accuracy_mean"] == pytest.approx(np.mean(best))
        texts = results[f"{method}/per_seed/search/best_architecture"]
        assert results[f"{method}/search/best_architecture"] == texts[int(np.argmax(best))]
        assert all(text.startswith("conv") for text in texts)
    assert results["search/space_size"] == SearchSpace(2, (2, 4), (1, 3)).num_architectures()
    assert os.path.isfile(os.path.join(workdir, "plots", "search_curve.png"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2]
    # The best-so-far accuracy never falls.
    curve = [r["train/best_val_accuracy/evolution"] for r in records]
    assert curve == sorted(curve)
    assert [r["train/children_evaluated/random"] for r in records] == [2, 4]


def test_resumed_run_equals_uninterrupted(tmp_path, smoke_run, interrupt_first_step, without_figures):
    from lepton_jax.interrupt import Interrupted

    _, full = smoke_run
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        trainer.train_and_evaluate(smoke_config(), str(tmp_path / "split"))
    resumed = trainer.train_and_evaluate(smoke_config(), str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == full["params_sha256"]
    for method in search.METHODS:
        assert resumed[f"{method}/per_seed/test/accuracy"] == full[f"{method}/per_seed/test/accuracy"]


def test_launch_checks_refuse_bad_values():
    from scripts import trainers
    from tests.conftest import one_line_error

    trainers.validate(nas_config.get_config())
    trainers.validate(nas_config.get_config("compare,small"))
    cases = {
        "search": ("controller,genetic", "config.search='controller,genetic' is not allowed"),
        "kernel_choices": ((1, 4), "config.kernel_choices=(1, 4)"),
        "tournament_size": (100, "config.tournament_size (100) is larger than config.population_size"),
        "val_fraction": (0.0, "config.val_fraction=0.0"),
        "dataset": ("cora", "not an image dataset"),
    }
    for key, (value, fragment) in cases.items():
        config = nas_config.get_config()
        config[key] = value
        one_line_error(lambda c=config: trainers.validate(c), fragment)
    with pytest.raises(UserError, match="unknown config arg 'large'"):
        nas_config.get_config("large")


def test_children_are_independent_of_their_batch_and_compile_once(digits):
    """A child's accuracy depends on its architecture and key, not on the other children of its call; a second call
    with other architectures reuses the compiled step."""
    trainer_ = children.make_child_trainer(SMALL, 10, (8, 8, 1), 32, 3e-3, "unroll")
    data = trainer_.place((digits.train_images[:128], digits.train_labels[:128]))
    archs = space_lib.uniform(SMALL, jax.random.PRNGKey(0), 3)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    first, first_loss = trainer_.train(archs[:2], keys[:2], data, data, 2)
    second, second_loss = trainer_.train(archs[jnp.array([2, 0])], keys[jnp.array([2, 0])], data, data, 2)
    assert float(second[1]) == float(first[0]) and float(second_loss[1]) == pytest.approx(float(first_loss[0]))
    assert trainer_.epoch.step._cache_size() == 1


def test_children_compute_in_bf16_with_float32_parameters(digits):
    """`config.precision=bf16`: every convolution and product of the children's training step is in bf16; their
    parameters and Adam moments stay float32."""
    from tests.core.test_precision import compute_dtypes

    trainer_ = children.make_child_trainer(SMALL, 10, (8, 8, 1), 16, 3e-3, "vmap", "bf16")
    archs = space_lib.uniform(SMALL, jax.random.PRNGKey(0), 2)
    kids = trainer_.init(jax.random.split(jax.random.PRNGKey(1), 2), archs)
    data = trainer_.place((digits.train_images[:32], digits.train_labels[:32]))
    assert compute_dtypes(trainer_.epoch.step, kids, data, jnp.zeros((2, 1, 16), jnp.int32), 0) == {"bfloat16"}
    floats = [x for x in jax.tree.leaves((kids.params, kids.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {str(x.dtype) for x in floats} == {"float32"}
