"""Deep Graph Infomax (Veličković et al., ICLR 2019): node embeddings learned without labels, tested by a linear probe.

    python -m scripts.train --config=graphs/configs/dgi.py:cora --workdir=runs/dgi_cora

The encoder is one GCN layer with a PReLU, `h = PReLU(Â X W + b)` (512 units; `Â = D^-1/2 (A + I) D^-1/2`). The
readout summarises the graph, `s = sigmoid(mean_i h_i)`, and a bilinear discriminator scores each embedding against
it, `D(h_i, s) = h_i^T M s + c`. Negatives come from a corrupted graph: the same edges with the feature rows shuffled
across the nodes (a fresh permutation each epoch). The loss is the binary cross-entropy of `D` on the N real
embeddings (label 1) and the N corrupted ones (label 0), averaged over all 2N. Adam; each seed keeps the parameters
of its lowest loss and stops when `patience` epochs in a row bring no new lowest (the reference code's rule: the
loss is that of the parameters before the epoch's update).

The frozen embeddings of the kept encoder are then probed (`graphs/probe.py`): logistic regression on the training
nodes of the dataset's split, `probe_runs` times from different initialisations. `test/accuracy` is each seed's mean
over those runs (`test/accuracy_mean`, `_std` over seeds); `test/accuracy_probe_std` is the spread over the probe runs
of one encoder, which is what the reference code prints. All seeds train in one program (vmapped), each stopping on
its own.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from graphs import common, models, probe
from graphs.data import load_node_dataset
from graphs.node_classification import labels_of
from lepton_jax import epochs, parallel, registry, run, seeds, supervised
from lepton_jax.techniques import early_stopping, precision


def bilinear_init(key, shape, dtype=jnp.float32):
    """torch's `xavier_uniform_` on `nn.Bilinear(H, H, 1)`'s `(1, H, H)` weight (fan in H*H, fan out H), for the
    `(H, H)` matrix `M`: 16x narrower at H = 512 than Glorot on `(H, H)`, so the first scores are near 0."""
    bound = math.sqrt(6.0 / (shape[0] * shape[1] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def corruption(key, num_nodes: int):
    """A random permutation of the `num_nodes` nodes `(N,)`: the corrupted graph's node `i` gets node
    `permutation[i]`'s features (`shuffle_rows`), its edges unchanged."""
    return jax.random.permutation(key, num_nodes)


def shuffle_rows(features, permutation):
    """Row `i` of the result is row `permutation[i]` of `features` `(N, F)`."""
    return features[permutation]


class DGI(nn.Module):
    """The encoder, the readout and the discriminator. `__call__(graph, permutation)` returns the discriminator's
    logits `(N,)` on the real embeddings and `(N,)` on those of the graph corrupted by `permutation`; `embed(graph)`
    the embeddings `(N, hidden)`."""

    hidden: int = 512

    def setup(self):
        self.linear = models.Linear(self.hidden)  # Glorot, no bias (dense or `SparseFeatures` input)
        self.bias = self.param("bias", nn.initializers.zeros, (self.hidden,))
        self.prelu = nn.PReLU(negative_slope_init=0.25)  # one shared slope, torch's default
        self.kernel = self.param("discriminator_kernel", bilinear_init, (self.hidden, self.hidden))
        self.discriminator_bias = self.param("discriminator_bias", nn.initializers.zeros, ())

    def encode(self, transformed, graph):
        """`PReLU(Â (X W) + b)` from the transformed features `X W` `(N, hidden)`."""
        return self.prelu(models.gcn_propagate(transformed, graph.senders, graph.receivers) + self.bias)

    def embed(self, graph):
        return self.encode(self.linear(graph.nodes), graph)

    def discriminate(self, embeddings, summary):
        """`h_i^T M s + c` for each row of `embeddings` `(N, H)` -> `(N,)`."""
        return embeddings @ (self.kernel @ summary) + self.discriminator_bias

    def __call__(self, graph, permutation):
        transformed = self.linear(graph.nodes)  # (N, H)
        real = self.encode(transformed, graph)
        # (P X) W = P (X W): the corrupted graph's transform is the real one's rows shuffled, one product saved.
        corrupted = self.encode(shuffle_rows(transformed, permutation), graph)
        summary = jax.nn.sigmoid(real.mean(0))  # (H,)
        return self.discriminate(real, summary), self.discriminate(corrupted, summary)


def dgi_loss(real_logits, corrupted_logits):
    """Binary cross-entropy averaged over the 2N scores: real embeddings labelled 1, corrupted ones 0."""
    real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
    corrupted = optax.sigmoid_binary_cross_entropy(corrupted_logits, jnp.zeros_like(corrupted_logits))
    return 0.5 * (real.mean() + corrupted.mean())


@struct.dataclass
class DGIState:
    train_state: TrainState
    early: early_stopping.EarlyStopping
    rng: jax.Array


def make_steps(config, model):
    """The steps of one seed (vmap them over seeds): `init(key, graph) -> state`,
    `epoch_step(state, graph, epoch) -> (state, metrics)` and `loss_fn(params, graph, permutation) -> loss`."""
    tx = common.make_optimizer(config, config.num_epochs)

    def init(key, graph):
        key, init_key = jax.random.split(key)
        params = model.init({"params": init_key}, graph, jnp.arange(graph.nodes.shape[0]))
        train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return DGIState(train_state, early_stopping.EarlyStopping.create(params), key)

    def loss_fn(params, graph, permutation):
        return dgi_loss(*model.apply(params, graph, permutation))

    def epoch_step(state: DGIState, graph, epoch):
        rng, key = jax.random.split(state.rng)
        permutation = corruption(key, graph.nodes.shape[0])
        params = state.train_state.params
        loss, grads = precision.value_and_grad(loss_fn, state.train_state.opt_state)(params, graph, permutation)
        # The loss is that of `params`, before this epoch's update: those are the parameters a new lowest keeps.
        early = state.early.update(params, (-loss,), epoch, config.patience)
        new = DGIState(state.train_state.apply_gradients(grads=grads), early, rng)
        # A seed whose patience has run out keeps its state while the others go on.
        return early_stopping.where(state.early.stopped, state, new), {"train/loss": loss}

    return init, epoch_step, loss_fn


def make_task(config, workdir: str) -> supervised.Task:
    """The run `train_and_evaluate` hands to `supervised.fit`: all seeds in one program."""
    del workdir  # everything DGI writes goes through `supervised.fit`
    dataset = load_node_dataset(config.dataset, config.data_dir)
    mesh = parallel.mesh_from_config(config)
    # Sparse features: the one product X W gathers only the non-zero entries (1.3 % of Cora's).
    graph = common.full_graph(dataset, config.normalize_features, sparse=True)
    graph, labels = epochs.to_device((graph, labels_of(dataset)), mesh)
    model = precision.module(DGI(config.hidden), config)
    init_one, epoch_one, _ = make_steps(config, model)
    init = jax.jit(lambda key: jax.vmap(init_one, (0, None))(common.seed_keys(key, config.num_seeds), graph))
    epoch_step = jax.jit(seeds.over_seeds(epoch_one, (0, None, None), config.seed_loop), donate_argnums=0)

    @jax.jit
    def embed(params):
        return jax.vmap(lambda p: model.apply(p, graph, method=DGI.embed))(params)  # (seeds, N, H)

    @jax.jit
    def probe_all(key, embeddings):
        def one(seed_key, seed_embeddings):
            return probe.linear_probe(
                seed_key,
                seed_embeddings,
                labels,
                dataset.num_classes,
                config.probe_runs,
                config.probe_epochs,
                config.probe_lr,
            )

        return jax.vmap(one)(jax.random.split(key, embeddings.shape[0]), embeddings)

    def evaluate(state):
        # Cheap, every few epochs: the kept (lowest) loss. The probe runs once, at the end (`final`).
        return {"eval/best_loss": -state.early.best_scores[0], "eval/best_epoch": state.early.best_epoch + 1}

    def final(state, last_eval):
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)  # the probes' own stream
        result = probe_all(key, embed(state.early.best_params))  # (seeds, runs) each
        headline = {
            "val/accuracy": result.val_accuracy.mean(1),
            "test/accuracy": result.test_accuracy.mean(1),
            "test/accuracy_probe_std": result.test_accuracy.std(1),
            "train/best_loss": last_eval["eval/best_loss"],
            "best_epoch": np.asarray(state.early.best_epoch) + 1,
        }
        return run.seed_summary(headline) | dict(num_seeds=int(config.num_seeds), dataset=config.dataset, model="dgi")

    return supervised.Task(
        init=init,
        train_epoch=lambda state, epoch: epoch_step(state, graph, jnp.int32(epoch)),
        evaluate=evaluate,
        num_epochs=config.num_epochs,
        done=lambda state: early_stopping.all_stopped(state.early),
        final=final,
        params=lambda state: state.early.best_params,
        plot_keys=("train/loss",),
        title=f"DGI on {config.dataset}",
    )


@registry.register("dgi")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains DGI on `config.dataset` for `config.num_seeds` seeds at once, probes it; writes `results.json`."""
    task = make_task(config, workdir)
    return supervised.fit(config, workdir, task, desc=f"dgi {config.dataset}")[1]
