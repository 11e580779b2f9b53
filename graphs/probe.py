"""The linear probe of frozen node embeddings: logistic regression on the labelled training nodes, tested on the
validation and test nodes (the protocol of DGI, Veličković et al. 2019, and of the self-supervised graph methods
after it).

Each run starts from its own Glorot-uniform weights (zero bias) and takes `epochs` full-batch Adam steps on the
training nodes' cross-entropy, with no weight decay and no early stopping (as DGI's `LogReg`); all runs are one
vmapped program. The spread over runs measures the probe's own noise; the spread over encoder seeds is reported
separately by the trainer.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from graphs import metrics as graph_metrics


class ProbeResult(NamedTuple):
    """Per-run accuracies `(runs,)` of the probe on the validation and test nodes."""

    val_accuracy: jax.Array
    test_accuracy: jax.Array


def logistic_regression(key, embeddings, labels, train_mask, num_classes: int, epochs: int, lr: float) -> dict:
    """The weights `{"kernel": (H, C), "bias": (C,)}` of one probe trained on the rows of `embeddings` `(N, H)` where
    `train_mask` `(N,)` is set, against the integer `labels` `(N,)`."""
    params = {
        "kernel": jax.nn.initializers.glorot_uniform()(key, (embeddings.shape[1], num_classes)),
        "bias": jnp.zeros(num_classes),
    }
    tx = optax.adam(lr)

    def loss(p):
        return graph_metrics.cross_entropy(embeddings @ p["kernel"] + p["bias"], labels, train_mask)

    def step(carry, _):
        p, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(p), opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=epochs)
    return params


def linear_probe(key, embeddings, labels, num_classes: int, runs: int, epochs: int, lr: float) -> ProbeResult:
    """`runs` probes of the frozen `embeddings` `(N, H)` (no gradient reaches them), each from its own key.

    Args:
      key: the probes' initialisations.
      embeddings: `(N, H)` node embeddings.
      labels: `graphs.node_classification.Labels`-like: `labels` `(N,)`, masks `train`, `val`, `test` `(N,)`.
      num_classes: C.
      runs: how many probes.
      epochs: full-batch Adam steps of each.
      lr: Adam's rate.
    """
    embeddings = jax.lax.stop_gradient(embeddings)

    def one(run_key):
        p = logistic_regression(run_key, embeddings, labels.labels, labels.train, num_classes, epochs, lr)
        logits = embeddings @ p["kernel"] + p["bias"]
        return (
            graph_metrics.accuracy(logits, labels.labels, labels.val),
            graph_metrics.accuracy(logits, labels.labels, labels.test),
        )

    val, test = jax.vmap(one)(jax.random.split(key, runs))
    return ProbeResult(val, test)
