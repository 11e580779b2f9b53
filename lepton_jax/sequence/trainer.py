"""Sequence-to-sequence learning on the generated tasks (`tasks.py`), `num_seeds` seeds in one program.

    python -m scripts.train --config=lepton_jax/sequence/configs/seq2seq.py:addition,transformer --workdir=runs/add

Training is teacher forcing: the decoder reads BOS and the target shifted right, and the loss is the cross-entropy
of its next-token logits against the target, averaged over the target's non-padding tokens (the answer and its
EOS). Every step draws a fresh batch on the device from the seed's rng; an "epoch" is `steps_per_epoch` steps, run
as one jitted `lax.scan`. The optimiser is the shared factory's (`lepton_jax/techniques/optim.py`; the configs:
Adam, linear warm-up, cosine decay).

Every `eval_every_epochs` epochs each seed greedy-decodes the fixed test set (a seeded draw of `test_size` examples
from the training distribution) and the length-generalisation set (`test_size` inputs longer than any trained on):
`test/sequence_accuracy` (the whole answer and its EOS right), `test/token_accuracy` (over the target's tokens) and
the same under `long/`. The state records, per seed, the first step whose evaluation got every test sequence right.

results.json (`_mean`, `_std` and `per_seed/` over seeds): `test/sequence_accuracy`, `test/token_accuracy`,
`test/beam_sequence_accuracy`, `test/beam_token_accuracy` (beam search of `beam_size`), the same for `long/`, and
`test/steps_to_solve` (that first step; null when a seed never got there). plots/: `learning_curve.png` and
`attention.png`, the decoder's cross-attention over the input of one test example (seed 0).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax import parallel, plotting, registry, run, seeds, supervised
from lepton_jax.sequence import decode, models, tasks
from lepton_jax.techniques import optim, precision


@struct.dataclass
class Seq2SeqState:
    """One seed's training state (the trainer stacks the seeds on a leading axis)."""

    train_state: TrainState
    rng: jax.Array
    solved_at: jax.Array  # () int32: the first step whose evaluation decoded every test sequence right; 0: not yet


def accuracies(predictions, targets) -> dict[str, jax.Array]:
    """`sequence_accuracy`: the share of rows whose tokens all equal the padded targets' (B, T); `token_accuracy`:
    the share of the targets' non-padding tokens predicted right."""
    right = predictions == targets
    real = tasks.padding_mask(targets)
    return {
        "sequence_accuracy": jnp.mean(jnp.all(right, axis=1)),
        "token_accuracy": jnp.sum(right & real) / jnp.maximum(jnp.sum(real), 1),
    }


def masked_cross_entropy(logits, targets) -> jax.Array:
    """The mean cross-entropy over the non-padding target tokens: logits (B, T, V), targets (B, T)."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    real = tasks.padding_mask(targets)
    return jnp.sum(losses * real) / jnp.maximum(jnp.sum(real), 1)


def make_model(config, task: tasks.SequenceTask):
    """`config.model` for the task's vocabulary and widths, computing in `config.precision`."""
    model = models.make_model(config, len(tasks.VOCAB), max(task.input_length, task.target_length))
    return precision.module(model, config)


def plot_attention(weights, inputs, outputs, path: str, title: str = "") -> None:
    """The cross-attention of one example as a heatmap: rows the decoded tokens, columns the input tokens.

    Args:
      weights: (T, S) attention of each output position over the input columns (its rows sum to 1).
      inputs: (S,) input tokens; their PAD columns are left out.
      outputs: (T,) decoded tokens; the rows after the first EOS are left out.
    """
    inputs, outputs, weights = np.asarray(inputs), np.asarray(outputs), np.asarray(weights, np.float32)
    columns = int(np.sum(inputs != tasks.PAD))
    ends = np.flatnonzero(outputs == tasks.EOS)
    rows = int(ends[0]) + 1 if ends.size else len(outputs)
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * columns + 1.5), max(3.0, 0.45 * rows + 1.2)), dpi=120)
    image = ax.imshow(weights[:rows, :columns], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(columns), [tasks.VOCAB[t] for t in inputs[:columns]])
    ax.set_yticks(range(rows), [tasks.VOCAB[t] for t in outputs[:rows]])
    ax.set_xlabel("input")
    ax.set_ylabel("decoded output")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="attention")
    plotting.save(fig, path)


def make_task(config, workdir: str) -> supervised.Task:
    """The `supervised.Task` of a seq2seq run: `config.num_seeds` seeds trained and evaluated in one program."""
    task = tasks.from_config(config)
    model = make_model(config, task)
    steps, length = int(config.steps_per_epoch), task.target_length
    tx = optim.make(config, config.num_epochs * steps, steps)
    # One test set and one length-generalisation set shared by all the run's seeds: draws of `config.seed`'s key.
    data_key = jax.random.PRNGKey(config.seed)
    test = jax.jit(task.sample, static_argnums=1)(jax.random.fold_in(data_key, 1), config.test_size)
    long = jax.jit(task.sample_long, static_argnums=1)(jax.random.fold_in(data_key, 2), config.test_size)
    # Both sets have the task's widths: they are decoded as one batch (one traced decoder, not two).
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), test, long)

    def per_set(predictions, prefix: str = "") -> dict:
        """The accuracies of decoded `both` (2 * test_size rows), as `test/{prefix}...` and `long/{prefix}...`."""
        metrics = {}
        for name, rows in (("test", slice(0, config.test_size)), ("long", slice(config.test_size, None))):
            values = accuracies(predictions[rows], both.targets[rows])
            metrics |= {f"{name}/{prefix}{k}": v for k, v in values.items()}
        return metrics

    def init_one(key):
        key, init_key = jax.random.split(key)
        params = model.init(init_key, test.inputs[:1], tasks.decoder_inputs(test.targets[:1]))
        train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return Seq2SeqState(train_state, key, jnp.zeros((), jnp.int32))

    def loss_fn(params, batch: tasks.Batch, key):
        logits, _ = model.apply(params, batch.inputs, tasks.decoder_inputs(batch.targets), True, rngs={"dropout": key})
        predictions = jnp.argmax(logits, -1)
        return masked_cross_entropy(logits, batch.targets), accuracies(predictions, batch.targets)

    def epoch_one(state: Seq2SeqState):
        def step(carry, _):
            train_state, rng = carry
            rng, batch_key, dropout_key = jax.random.split(rng, 3)
            batch = task.sample(batch_key, config.batch_size)
            grad_fn = precision.value_and_grad(loss_fn, train_state.opt_state, has_aux=True)
            (loss, metrics), grads = grad_fn(train_state.params, batch, dropout_key)
            return (train_state.apply_gradients(grads=grads), rng), (loss, metrics["token_accuracy"])

        (train_state, rng), (losses, token_accuracy) = jax.lax.scan(
            step, (state.train_state, state.rng), None, length=steps
        )
        metrics = {"train/loss": losses.mean(), "train/token_accuracy": token_accuracy.mean()}
        return state.replace(train_state=train_state, rng=rng), metrics

    def evaluate_one(state: Seq2SeqState, step):
        metrics = per_set(decode.greedy_decode(model, state.train_state.params, both.inputs, length))
        solved = (state.solved_at == 0) & (metrics["test/sequence_accuracy"] == 1.0)
        return state.replace(solved_at=jnp.where(solved, step, state.solved_at)), metrics

    def beam_one(params):
        """The beam-search metrics, and the attention map of test example 0 while the decoder reads its beam output
        (teacher-forced on it: the same tokens, the decoder being causal): `(metrics, (outputs (T,), weights (T,
        S)))`."""
        predictions, _ = decode.beam_decode(model, params, both.inputs, length, config.beam_size)
        _, weights = model.apply(params, test.inputs[:1], tasks.decoder_inputs(predictions[:1]))  # (1, H, T, S)
        return per_set(predictions, "beam_"), (predictions[0], weights[0].mean(0))

    mode = config.seed_loop
    init = jax.jit(lambda key: jax.vmap(init_one)(jax.random.split(key, config.num_seeds)))
    epoch_step = jax.jit(seeds.over_seeds(epoch_one, (0,), mode), donate_argnums=0)
    evaluate_step = jax.jit(seeds.over_seeds(evaluate_one, (0, None), mode))
    final_beam = jax.jit(seeds.over_seeds(beam_one, (0,), mode))
    eval_every = max(1, int(config.eval_every_epochs))

    def train_epoch(state, epoch):
        state, metrics = epoch_step(state)
        if (epoch + 1) % eval_every == 0 or epoch + 1 == config.num_epochs:
            state, eval_metrics = evaluate_step(state, jnp.int32((epoch + 1) * steps))
            metrics |= eval_metrics
        return state, metrics

    def final(state, last_eval):
        del last_eval  # the last epoch's evaluation is in metrics.jsonl; the final numbers are computed here
        params = state.train_state.params
        _, greedy = evaluate_step(state, jnp.int32(0))  # the compiled evaluation; its state is not kept
        beam, (outputs, weights) = final_beam(params)
        per_seed = jax.device_get(greedy | beam)
        solved_at = np.asarray(jax.device_get(state.solved_at), np.float64)
        per_seed["test/steps_to_solve"] = np.where(solved_at > 0, solved_at, np.nan)
        count = sum(x.size for x in jax.tree.leaves(seeds.tree_slice(params, 0)))
        results = run.seed_summary(per_seed)
        results |= dict(task=config.task, model=config.model, num_seeds=int(config.num_seeds), num_params=count)
        if parallel.is_main_process():
            verdict = "right" if bool(jnp.all(outputs[0] == test.targets[0])) else "wrong"
            title = f"seed 0, beam search: {tasks.text(test.inputs[0])} -> {tasks.text(outputs[0])} ({verdict})"
            path = os.path.join(workdir, "plots", "attention.png")
            plot_attention(weights[0], test.inputs[0], outputs[0], path, title)
        return results

    return supervised.Task(
        init=init,
        train_epoch=train_epoch,
        evaluate=lambda state: {},  # evaluated inside `train_epoch`, which also records the step that solved it
        num_epochs=config.num_epochs,
        final=final,
        params=lambda state: state.train_state.params,
        plot_keys=("train/token_accuracy", "test/sequence_accuracy", "long/sequence_accuracy"),
        title=f"{config.model} on {config.task}",
        examples_per_epoch=steps * int(config.batch_size) * int(config.num_seeds),
    )


@registry.register("seq2seq")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config.model` on `config.task` for `config.num_seeds` seeds at once; writes results.json."""
    task = make_task(config, workdir)
    return supervised.fit(config, workdir, task, desc=f"{config.model} {config.task}")[1]
