"""Encoder-decoder models of token sequences: a Transformer and an LSTM with attention.

Both have the same three methods, which the trainer and the decoders (`decode.py`) call through `model.apply(...,
method=...)`:

- `encode(inputs (B, S), train) -> Encoded`: the input read once (padding columns masked out of all attention).
- `decode(encoded, decoder_inputs (B, T), train) -> (logits (B, T, V), attention (B, H, T, S))`: the next-token
  logits at every decoder position (position t sees decoder inputs 0..t only) and the decoder's cross-attention
  weights over the input (the Transformer's last layer, H heads; the LSTM's single one, H = 1).
- `__call__(inputs, decoder_inputs, train)`: `decode(encode(inputs))`, teacher forcing.

Every attention weight comes from `lepton_jax.layers.dot_product_attention` (its `masked_softmax`).
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax.initializers import orthogonal
from lepton_jax.layers import MLP, dot_product_attention
from lepton_jax.sequence.tasks import padding_mask

MODELS = ("transformer", "lstm")
POSITIONS = ("learned", "sinusoidal")


class Encoded(NamedTuple):
    """What the decoder reads of the input."""

    memory: jax.Array  # (B, S, D): one vector per input column
    mask: jax.Array  # (B, S) bool: the real (non-padding) columns
    carry: tuple | None = None  # the LSTM decoder's initial (c, h), each (B, D); None for the Transformer


def sinusoids(length: int, size: int) -> np.ndarray:
    """Vaswani et al.'s fixed positions: `sin(p / 10000^(2i/size))` in the first half of the features, `cos` in the
    second: (length, size) float32."""
    half = size // 2
    rates = np.exp(-np.log(10000.0) * np.arange(half) / max(half, 1))
    angles = np.arange(length)[:, None] * rates[None, :]
    out = np.zeros((length, size), np.float32)
    out[:, :half], out[:, half : 2 * half] = np.sin(angles), np.cos(angles)
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project to `num_heads` heads of `D / num_heads`, attend, project back to D."""

    num_heads: int

    @nn.compact
    def __call__(self, queries, keys, mask):
        """queries (B, Tq, D), keys (B, Tk, D), mask broadcastable to (B, H, Tq, Tk) -> (out (B, Tq, D), weights
        (B, H, Tq, Tk))."""
        size = queries.shape[-1]
        heads = (self.num_heads, size // self.num_heads)
        q = nn.DenseGeneral(heads, name="query")(queries)  # (B, Tq, H, D/H)
        k = nn.DenseGeneral(heads, name="key")(keys)
        v = nn.DenseGeneral(heads, name="value")(keys)
        out, weights = dot_product_attention(q, k, v, mask)
        return nn.DenseGeneral(size, axis=(-2, -1), name="out")(out), weights


class TransformerBlock(nn.Module):
    """A pre-LN block: self-attention, then (decoder) cross-attention over the encoder's memory, then an MLP, each
    `x + dropout(f(LayerNorm(x)))`."""

    num_heads: int
    mlp_size: int
    dropout: float
    cross: bool  # a decoder block

    @nn.compact
    def __call__(self, x, self_mask, train: bool, memory=None, memory_mask=None):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        y = nn.LayerNorm(name="norm_self")(x)
        x = x + drop(MultiHeadAttention(self.num_heads, name="self_attention")(y, y, self_mask)[0])
        weights = None
        if self.cross:
            y = nn.LayerNorm(name="norm_cross")(x)
            attended, weights = MultiHeadAttention(self.num_heads, name="cross_attention")(y, memory, memory_mask)
            x = x + drop(attended)
        y = nn.LayerNorm(name="norm_mlp")(x)
        x = x + drop(MLP((self.mlp_size, x.shape[-1]), "gelu", activate_final=False, name="mlp")(y))
        return x, weights


class Transformer(nn.Module):
    """A pre-LN Transformer encoder-decoder (Vaswani et al. 2017; LayerNorm before each sub-layer, Xiong et al.
    2020): `num_layers` encoder and `num_layers` decoder blocks of width `hidden`, token embeddings shared by both
    sides (scaled by sqrt(hidden)) plus learned or sinusoidal positions, and a final LayerNorm on each side.

    The decoder's self-attention is causal; no padding mask is needed there: a real target position's earlier
    positions are all real.
    """

    vocab_size: int
    max_length: int  # the positions a learned table covers: the longest input or decoder sequence
    hidden: int = 128
    num_heads: int = 4
    num_layers: int = 2
    mlp_size: int = 512
    dropout: float = 0.0
    positions: str = "sinusoidal"

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.hidden)
        if self.positions == "learned":
            init = nn.initializers.normal(0.02)
            self.position_table = self.param("position_table", init, (self.max_length, self.hidden))
        else:
            self.position_table = jnp.asarray(sinusoids(self.max_length, self.hidden))
        self.drop = nn.Dropout(self.dropout)
        block = lambda cross, i: TransformerBlock(  # noqa: E731
            self.num_heads, self.mlp_size, self.dropout, cross, name=f"{'decoder' if cross else 'encoder'}_{i}"
        )
        self.encoder_blocks = [block(False, i) for i in range(self.num_layers)]
        self.decoder_blocks = [block(True, i) for i in range(self.num_layers)]
        self.encoder_norm = nn.LayerNorm()
        self.decoder_norm = nn.LayerNorm()
        self.head = nn.Dense(self.vocab_size)

    def embed_tokens(self, tokens, train: bool):
        x = self.embed(tokens) * jnp.sqrt(self.hidden) + self.position_table[: tokens.shape[1]]
        return self.drop(x, deterministic=not train)

    def encode(self, inputs, train: bool = False) -> Encoded:
        mask = padding_mask(inputs)
        x = self.embed_tokens(inputs, train)
        for block in self.encoder_blocks:
            x, _ = block(x, mask[:, None, None, :], train)
        return Encoded(self.encoder_norm(x), mask)

    def decode(self, encoded: Encoded, decoder_inputs, train: bool = False):
        length = decoder_inputs.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))  # query t attends to positions <= t
        y = self.embed_tokens(decoder_inputs, train)
        weights = None
        for block in self.decoder_blocks:
            y, weights = block(y, causal, train, encoded.memory, encoded.mask[:, None, None, :])
        return self.head(self.decoder_norm(y)), weights

    def __call__(self, inputs, decoder_inputs, train: bool = False):
        return self.decode(self.encode(inputs, train), decoder_inputs, train)


class LSTMSeq2Seq(nn.Module):
    """An LSTM encoder-decoder with Luong et al.'s (2015) global attention.

    The encoder is a bidirectional LSTM that stops at each row's last real token (`seq_lengths`); its outputs,
    concatenated and projected to `hidden`, are the memory, and its forward final state starts the decoder. The
    decoder LSTM reads the embedded decoder inputs; at each position its state h_t attends over the memory
    ("general" score, `(W h_t) . m_s`, scaled by 1/sqrt(hidden)), and `tanh(W_c [context; h_t])` gives the logits.
    """

    vocab_size: int
    hidden: int = 128

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.hidden)
        cell = lambda: nn.OptimizedLSTMCell(self.hidden, recurrent_kernel_init=orthogonal())  # noqa: E731
        self.encoder = nn.Bidirectional(nn.RNN(cell()), nn.RNN(cell()), return_carry=True)
        self.project_memory = nn.Dense(self.hidden)
        self.decoder = nn.RNN(cell())
        self.query = nn.Dense(self.hidden)
        self.combine = nn.Dense(self.hidden)
        self.head = nn.Dense(self.vocab_size)

    def encode(self, inputs, train: bool = False) -> Encoded:
        del train
        mask = padding_mask(inputs)
        (forward_carry, _), outputs = self.encoder(self.embed(inputs), seq_lengths=mask.sum(1))
        return Encoded(self.project_memory(outputs), mask, forward_carry)

    def decode(self, encoded: Encoded, decoder_inputs, train: bool = False):
        del train
        states = self.decoder(self.embed(decoder_inputs), initial_carry=encoded.carry)  # (B, T, D)
        memory = encoded.memory[:, :, None, :]  # (B, S, 1, D): one head
        query = self.query(states)[:, :, None, :]
        context, weights = dot_product_attention(query, memory, memory, encoded.mask[:, None, None])
        attentional = jnp.tanh(self.combine(jnp.concatenate([context[:, :, 0], states], -1)))
        return self.head(attentional), weights

    def __call__(self, inputs, decoder_inputs, train: bool = False):
        return self.decode(self.encode(inputs, train), decoder_inputs, train)


def make_model(config, vocab_size: int, max_length: int) -> nn.Module:
    """The model `config.model` names ("transformer" or "lstm"), of width `config.hidden`.

    Raises:
      ValueError: an unknown model (the launcher refuses it first, with the valid choices).
    """
    if config.model == "transformer":
        return Transformer(
            vocab_size,
            max_length,
            config.hidden,
            config.num_heads,
            config.num_layers,
            config.mlp_size,
            config.dropout,
            config.positions,
        )
    if config.model == "lstm":
        return LSTMSeq2Seq(vocab_size, config.hidden)
    raise ValueError(f"unknown sequence model {config.model!r}; valid: {', '.join(MODELS)}")
