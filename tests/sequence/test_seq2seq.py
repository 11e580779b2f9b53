"""Sequence-to-sequence: the generated tasks against Python arithmetic, the attention core against a hand
computation, the models' masks, greedy and beam decoding, and the trainer (learning, workdir, resume)."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lepton_jax import config as config_lib
from lepton_jax import layers
from lepton_jax.sequence import configs, decode, models, tasks, trainer
from lepton_jax.sequence.configs import seq2seq
from tests.conftest import one_line_error

# -- tasks ------------------------------------------------------------------------------------------------------------


def _draw(sample, key, n: int) -> tasks.Batch:
    """`n` examples of a task's sampler, drawn in one compiled program."""
    return jax.jit(sample, static_argnums=1)(key, n)


def _rows(batch: tasks.Batch) -> list[tuple[str, str]]:
    """(input text, target text) per example, after checking the target's layout: answer, one EOS, then PAD."""
    rows = []
    for inputs, targets in zip(np.asarray(batch.inputs), np.asarray(batch.targets)):
        end = int(np.flatnonzero(targets == tasks.EOS)[0])
        assert np.all(targets[:end] >= tasks.ZERO) and np.all(targets[end + 1 :] == tasks.PAD)
        real = int(np.sum(inputs != tasks.PAD))
        assert np.all(inputs[:real] != tasks.PAD)  # left-aligned: no padding between tokens
        rows.append((tasks.text(inputs), tasks.text(targets)))
    return rows


def test_addition_targets_are_the_sums():
    task = tasks.make_task("addition", max_digits=3, longer_by=2)
    assert (task.input_length, task.target_length) == (11, 7)  # "12345+12345"; 6 digits and EOS
    key = jax.random.PRNGKey(0)
    for batch, long in ((_draw(task.sample, key, 300), False), (_draw(task.sample_long, key, 300), True)):
        for question, answer in _rows(batch):
            a, b = question.split("+")
            assert answer == str(int(a) + int(b)), question
            assert all(s == str(int(s)) for s in (a, b))  # no leading zeros
            longest = max(len(a), len(b))
            assert 4 <= longest <= 5 if long else longest <= 3, question


@pytest.mark.parametrize("name", ["reversal", "sorting"])
def test_reversal_and_sorting_targets(name):
    task = tasks.make_task(name, min_length=2, max_length=6, longer_by=3)
    assert (task.input_length, task.target_length) == (9, 10)
    key = jax.random.PRNGKey(1)
    expected = (lambda s: s[::-1]) if name == "reversal" else (lambda s: "".join(sorted(s)))
    for batch, lengths in (
        (_draw(task.sample, key, 300), range(2, 7)),
        (_draw(task.sample_long, key, 300), range(7, 10)),
    ):
        rows = _rows(batch)
        assert {len(q) for q, _ in rows} == set(lengths)  # every length drawn, none outside
        for question, answer in rows:
            assert answer == expected(question)


def test_unknown_task_and_overflowing_addition_are_refused():
    with pytest.raises(ValueError, match="reversal"):
        tasks.make_task("copying")
    with pytest.raises(ValueError, match="<= 9"):
        tasks.make_task("addition", max_digits=8, longer_by=2)


def test_accuracies_count_sequences_and_target_tokens():
    p, e = tasks.PAD, tasks.EOS
    targets = jnp.array([[4, 5, e, p], [4, e, p, p]])
    predictions = jnp.array([[4, 5, e, p], [6, e, p, p]])
    metrics = trainer.accuracies(predictions, targets)
    assert float(metrics["sequence_accuracy"]) == 0.5
    assert float(metrics["token_accuracy"]) == pytest.approx(4 / 5)


# -- the attention core ------------------------------------------------------------------------------------------------


def test_masked_softmax_against_a_hand_computation():
    logits = jnp.array([[1.0, 2.0, 3.0, 1000.0], [5.0, 1.0, 0.0, 2.0], [1e4, 1e4 + 1.0, 0.0, 0.0]])
    mask = jnp.array([[True, True, False, True], [False] * 4, [True, True, False, False]])
    weights = np.asarray(jax.jit(layers.masked_softmax)(logits, mask))
    e = np.exp([1.0 - 1000.0, 2.0 - 1000.0, 0.0])  # row 0: keys 0, 1, 3
    np.testing.assert_allclose(weights[0], [e[0] / e.sum(), e[1] / e.sum(), 0.0, e[2] / e.sum()], rtol=1e-6)
    np.testing.assert_array_equal(weights[1], 0.0)  # nothing to attend to
    np.testing.assert_allclose(weights[2], [1 / (1 + np.e), np.e / (1 + np.e), 0.0, 0.0], rtol=1e-6)  # no overflow
    grads = jax.jit(jax.grad(lambda x: jnp.sum(layers.masked_softmax(x, mask) ** 2)))(logits)
    assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[~np.asarray(mask)] == 0)


def test_dot_product_attention_against_numpy():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, n, 3, 4)).astype(np.float32) for n in (5, 6, 6))  # (B, T, H, D)
    mask = rng.random((2, 1, 5, 6)) < 0.7
    mask[..., 0] = True
    out, weights = jax.jit(layers.dot_product_attention)(q, k, v, mask)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0  # sqrt(D) = 2
    scores = np.where(mask, scores, -np.inf)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out, np.einsum("bhqk,bkhd->bqhd", expected, v), rtol=1e-5, atol=1e-6)


# -- the models --------------------------------------------------------------------------------------------------------

TASK = tasks.make_task("reversal", min_length=1, max_length=6, longer_by=2)  # S = 8, T = 9


def _model(name: str, positions: str = "learned"):
    config = seq2seq.get_config(f"reversal,{name},smoke")
    config.update(hidden=16, num_heads=2, num_layers=1, mlp_size=32, positions=positions)
    return models.make_model(config, len(tasks.VOCAB), 16)  # positions for inputs padded wider than S too


@pytest.fixture(scope="module", params=["transformer", "lstm"])
def model_and_params(request):
    """A freshly initialised model and a batch, its forward pass jitted once for the module."""
    model = _model(request.param)
    batch = _draw(TASK.sample, jax.random.PRNGKey(0), 6)
    params = jax.jit(model.init)(jax.random.PRNGKey(1), batch.inputs, tasks.decoder_inputs(batch.targets))
    forward = jax.jit(lambda inputs, decoder_inputs: model.apply(params, inputs, decoder_inputs))
    return model, params, batch, forward


def test_the_decoder_cannot_see_the_future(model_and_params):
    """Changing decoder input t changes no logits before t (and does change the logits at t)."""
    _, _, batch, forward = model_and_params
    decoder_inputs = tasks.decoder_inputs(batch.targets)
    logits, _ = forward(batch.inputs, decoder_inputs)
    for t in (1, 4, TASK.target_length - 1):
        changed = decoder_inputs.at[:, t].set((decoder_inputs[:, t] + 5) % len(tasks.VOCAB))
        other, _ = forward(batch.inputs, changed)
        np.testing.assert_array_equal(other[:, :t], logits[:, :t])
        assert not np.allclose(other[:, t], logits[:, t])


def test_cross_attention_sums_to_one_over_the_input_and_is_zero_on_padding(model_and_params):
    _, _, batch, forward = model_and_params
    _, weights = forward(batch.inputs, tasks.decoder_inputs(batch.targets))  # (B, H, T, S)
    assert weights.shape[0] == batch.inputs.shape[0] and weights.shape[2:] == (TASK.target_length, TASK.input_length)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    padding = np.asarray(batch.inputs == tasks.PAD)[:, None, None, :]
    assert padding.any() and np.all(np.asarray(weights)[np.broadcast_to(padding, weights.shape)] == 0.0)


def test_more_padding_changes_nothing(model_and_params):
    """The encoders read only the real columns: padding an input wider gives the same logits."""
    _, _, batch, forward = model_and_params
    decoder_inputs = tasks.decoder_inputs(batch.targets)
    wider = jnp.pad(batch.inputs, ((0, 0), (0, 5)), constant_values=tasks.PAD)
    np.testing.assert_allclose(forward(wider, decoder_inputs)[0], forward(batch.inputs, decoder_inputs)[0], atol=1e-5)


def test_sinusoidal_positions_are_sines_then_cosines():
    table = models.sinusoids(50, 8)
    position, i = 7, 2
    assert table[position, i] == pytest.approx(np.sin(position / 10000 ** (i / 4)))
    assert table[position, 4 + i] == pytest.approx(np.cos(position / 10000 ** (i / 4)))


# -- decoding ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformer():
    """A random Transformer (sinusoidal positions), its parameters, and jitted greedy and beam decoders."""
    model = _model("transformer", "sinusoidal")
    batch = _draw(TASK.sample, jax.random.PRNGKey(2), 8)
    params = jax.jit(model.init)(jax.random.PRNGKey(3), batch.inputs, tasks.decoder_inputs(batch.targets))
    length = TASK.target_length
    greedy = jax.jit(chex.assert_max_traces(lambda p, x: decode.greedy_decode(model, p, x, length), n=1))
    beam = jax.jit(
        chex.assert_max_traces(lambda p, x, k: decode.beam_decode(model, p, x, length, k), n=2), static_argnums=2
    )
    return model, params, batch, greedy, beam


def test_greedy_is_the_argmax_of_the_teacher_forced_logits_on_its_own_output(transformer):
    model, params, batch, greedy, _ = transformer
    tokens = greedy(params, batch.inputs)
    logits, _ = jax.jit(model.apply)(params, batch.inputs, tasks.decoder_inputs(tokens))
    before_end = np.cumsum(np.asarray(tokens) == tasks.EOS, axis=1) - (np.asarray(tokens) == tasks.EOS) == 0
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits, -1))[before_end], np.asarray(tokens)[before_end])
    assert np.all(np.asarray(tokens)[~before_end] == tasks.PAD)


def test_beam_of_one_is_greedy(transformer):
    _, params, batch, greedy, beam = transformer
    tokens, scores = beam(params, batch.inputs, 1)
    np.testing.assert_array_equal(tokens, greedy(params, batch.inputs))
    assert np.all(np.isfinite(scores))


def test_decoders_compile_once_for_inputs_of_different_lengths(transformer):
    """Short (1-6 digits) and long (7-8) inputs share the task's width: one trace each (`assert_max_traces`)."""
    _, params, _, greedy, beam = transformer
    for sample in (TASK.sample, TASK.sample_long, TASK.sample):
        inputs = _draw(sample, jax.random.PRNGKey(4), 8).inputs
        greedy(params, inputs)
        beam(params, inputs, 3)


# A hand-made next-token model (V tokens): its logits at position t depend on decoder input t only. From BOS: "a" 0.6,
# "b" 0.4; after "a": EOS 0.4, "a" 0.3, "b" 0.3; after "b": EOS 1.0. Greedy takes "a" then EOS (0.6 x 0.4 = 0.24);
# the most likely sequence is "b" EOS (0.4).
A, B = tasks.ZERO, tasks.ZERO + 1
_TABLE = np.full((len(tasks.VOCAB), len(tasks.VOCAB)), 1e-12)
_TABLE[tasks.BOS, [A, B]] = 0.6, 0.4
_TABLE[A, [tasks.EOS, A, B]] = 0.4, 0.3, 0.3
_TABLE[B, tasks.EOS] = 1.0
_TABLE[[tasks.PAD, tasks.EOS], tasks.PAD] = 1.0


def _table_logits(decoder_inputs):
    return jnp.log(jnp.asarray(_TABLE, jnp.float32))[decoder_inputs]


def test_beam_search_finds_a_more_likely_sequence_than_greedy():
    @jax.jit
    def run():
        greedy = decode.greedy(_table_logits, 2, 4)
        beams = [decode.beam_search(_table_logits, 2, 4, k) for k in (1, 2)]
        scored = [decode.sequence_log_prob(_table_logits, t) for t in (greedy, beams[1][0])]
        return greedy, beams, scored

    greedy, ((one, _), (tokens, scores)), (greedy_log_prob, beam_log_prob) = run()
    np.testing.assert_array_equal(greedy, [[A, tasks.EOS, 0, 0]] * 2)
    np.testing.assert_array_equal(tokens, [[B, tasks.EOS, 0, 0]] * 2)
    np.testing.assert_allclose(scores, np.log(0.4), rtol=1e-5)
    np.testing.assert_allclose(beam_log_prob, np.log(0.4), rtol=1e-5)
    np.testing.assert_allclose(greedy_log_prob, np.log(0.24), rtol=1e-5)
    np.testing.assert_array_equal(one, greedy)


# -- configs -----------------------------------------------------------------------------------------------------------


def _validate(config):
    config_lib.validate(config, configs.KEYS, configs.CHECKS)


def test_every_task_and_model_config_is_valid():
    for name in tasks.TASKS:
        for model in models.MODELS:
            for smoke in ("", ",smoke"):
                _validate(seq2seq.get_config(f"{name},{model}{smoke}"))
    assert not set(configs.KEYS) & set(config_lib.KEYS)  # declared once
    one_line_error(lambda: seq2seq.get_config("addition,gru"), "unknown config arg 'gru'", "lstm")


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"min_length": 9}, "config.min_length=9 is larger than config.max_length=8"),
        ({"num_heads": 3}, "config.hidden=64 is not divisible by config.num_heads=3"),
        ({"max_digits": 8}, "at most 9 digits"),
        ({"task": "copying"}, "config.task='copying' is not allowed: it must be one of addition, reversal, sorting"),
        ({"positions": "rotary"}, "one of learned, sinusoidal"),
        ({"beam_size": 0}, "config.beam_size=0"),
    ],
)
def test_a_bad_value_is_one_line(changes, fragment):
    config = seq2seq.get_config("addition,transformer")
    config.update(changes)
    message = one_line_error(lambda: _validate(config), fragment)
    assert fragment in message and "\n" not in message, message


# -- the trainer -------------------------------------------------------------------------------------------------------


def test_smoke_run_learns_and_fills_the_workdir(seq2seq_run):
    workdir, results = seq2seq_run
    # Chance: uniform digits with EOS in the right place get about 0.4 of the tokens and 10^-length of the sequences;
    # 100 steps reach about 0.85 and 0.65.
    assert results["test/token_accuracy_mean"] > 0.7 and results["test/beam_token_accuracy_mean"] > 0.7, results
    assert results["test/sequence_accuracy_mean"] > 0.3, results
    for name in ("test/sequence_accuracy", "test/beam_sequence_accuracy", "long/token_accuracy"):
        assert len(results[f"per_seed/{name}"]) == 2 and 0 <= results[f"{name}_mean"] <= 1
    assert results["task"] == "reversal" and results["num_seeds"] == 2
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["params_sha256"] == results["params_sha256"]
    for name in ("attention.png", "learning_curve.png"):
        with open(os.path.join(workdir, "plots", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "test/sequence_accuracy" in rows[1]


def test_resumed_run_equals_uninterrupted(tmp_path, seq2seq_run, interrupt_first_step):
    from lepton_jax.interrupt import Interrupted
    from tests.sequence.conftest import smoke_config

    _, full = seq2seq_run
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        trainer.train_and_evaluate(smoke_config(), str(tmp_path / "split"))
    resumed = trainer.train_and_evaluate(smoke_config(), str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["per_seed/test/token_accuracy"] == full["per_seed/test/token_accuracy"]
