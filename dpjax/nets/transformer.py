"""Transformer denoiser: Diffusion Policy's `TransformerForDiffusion` (minGPT-style decoder) in flax.

Action tokens (Linear(Da -> width) + learned positions) are decoded against condition tokens
[time embedding, Linear(obs_features)] + learned positions, which first pass a condition encoder (an MLP). This is
the original's Push-T setting (obs_as_cond, time_as_cond, n_cond_layers = 0); its other modes are not reachable
from a dpjax config, and the PyTorch importer refuses them. Layers are torch's `TransformerDecoderLayer(norm_first=True,
activation="gelu", dim_feedforward=4 * width, dropout=attn_dropout)`: pre-norm, exact GELU, dropout on attention
weights and on every residual branch. With `causal_attn`, action token t sees action tokens <= t and condition
tokens s <= t + 1 (token 0 of the condition is the time step, so obs step o is visible from action t >= o).
"""
import functools
from typing import Any, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpjax.nets import precision
from dpjax.nets.embeddings import sinusoidal_embedding

_init = nn.initializers.normal(stddev=0.02)  # the original's _init_weights for Linear, attention, pos embs
_LAYER_NORM_EPS = 1e-5  # torch's default; flax's is 1e-6


def causal_mask(num_tokens: int) -> jax.Array:
  """bool [T, T]: query i may attend key j iff j <= i."""
  return jnp.tril(jnp.ones((num_tokens, num_tokens), dtype=bool))


def memory_mask(num_tokens: int, num_cond: int) -> jax.Array:
  """bool [T, S]: action token t may attend condition token s iff t >= s - 1 (s = 0 is the time step)."""
  t, s = jnp.meshgrid(jnp.arange(num_tokens), jnp.arange(num_cond), indexing="ij")
  return t >= s - 1


def weight_decay_mask(params) -> dict:
  """Pytree of bools like `params`: True where the original's `get_optim_groups` applies weight decay.

  Decayed: Dense / attention projection kernels (and conv kernels, if given encoder params). Not decayed:
  biases, LayerNorm / GroupNorm scales and biases, embeddings, positional embeddings.
  For `optax.adamw(..., mask=weight_decay_mask)`.
  """
  def decays(path, leaf):
    return getattr(path[-1], "key", None) == "kernel" and leaf.ndim >= 2
  return jax.tree_util.tree_map_with_path(decays, params)


def _attention(num_heads: int, rate: float, dtype, name: str, matmul_dtype=None) -> nn.MultiHeadDotProductAttention:
  # broadcast_dropout=False: torch drops attention weights independently per batch element and head. The softmax
  # runs in float32 whatever the compute dtype. With `matmul_dtype` the query/key/value and output projections
  # round their operands to it (`precision.dot_general`); the attention weights' two products stay in `dtype`.
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, dropout_rate=rate, broadcast_dropout=False, kernel_init=_init,
      bias_init=nn.initializers.zeros, dtype=dtype,
      attention_fn=functools.partial(nn.dot_product_attention, force_fp32_for_softmax=True),
      qkv_dot_general=precision.dot_general(matmul_dtype), out_dot_general=precision.dot_general(matmul_dtype),
      name=name)


def _layer_norm(dtype, name: str) -> nn.LayerNorm:
  """LayerNorm with float32 statistics (flax's force_float32_reductions), output in `dtype`."""
  return nn.LayerNorm(epsilon=_LAYER_NORM_EPS, dtype=dtype, name=name)


def _dense(features: int, dtype, name: str, matmul_dtype=None) -> nn.Dense:
  return nn.Dense(features, kernel_init=_init, dtype=dtype, dot_general=precision.dot_general(matmul_dtype),
                  name=name)


def _mask4(mask: Optional[jax.Array]) -> Optional[jax.Array]:
  return None if mask is None else mask[None, None]  # [1, 1, q, kv] broadcasts over batch and heads


class FeedForward(nn.Module):
  """Linear(4w), exact GELU, dropout, Linear(w): torch's `_ff_block` without its residual dropout."""
  width: int
  dropout: float
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _dense(4 * self.width, self.dtype, "linear1", self.matmul_dtype)(x)
    x = nn.gelu(x, approximate=False)  # torch activation="gelu" is the erf form
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return _dense(self.width, self.dtype, "linear2", self.matmul_dtype)(x)


class DecoderLayer(nn.Module):
  """Pre-norm self-attention, cross-attention to memory, feed-forward (torch TransformerDecoderLayer)."""
  width: int
  num_heads: int
  dropout: float
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x, memory, self_mask, cross_mask, train: bool) -> jax.Array:
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
    h = _layer_norm(self.dtype, "norm1")(x)
    x = x + drop(_attention(self.num_heads, self.dropout, self.dtype, "self_attn", self.matmul_dtype)(
        h, h, mask=_mask4(self_mask), deterministic=not train))
    # As torch: the query is normalised, the memory is not.
    h = _layer_norm(self.dtype, "norm2")(x)
    x = x + drop(_attention(self.num_heads, self.dropout, self.dtype, "cross_attn", self.matmul_dtype)(
        h, memory, mask=_mask4(cross_mask), deterministic=not train))
    h = _layer_norm(self.dtype, "norm3")(x)
    return x + drop(FeedForward(self.width, self.dropout, self.dtype, self.matmul_dtype, name="ff")(h, train))


class TransformerDenoiser(nn.Module):
  """Noisy action sequence, diffusion step and observation features -> denoiser output.

  Attributes:
    horizon: T, action tokens.
    n_obs_steps: To, observation steps in obs_features.
    num_layers: decoder layers (original n_layer).
    num_heads: attention heads (n_head).
    width: token width (n_emb).
    embed_dropout: dropout on token + position embeddings (p_drop_emb).
    attn_dropout: dropout on attention weights and residual branches (p_drop_attn).
    causal_attn: causal self-attention and the memory mask above; False: full attention.
    dtype: compute dtype of matmuls (float32 or bfloat16), and of the activations between them; parameters,
      LayerNorm statistics, attention softmax and the output stay float32.
    matmul_dtype: if given, the dtype the Dense layers' and attention projections' operands are rounded to, their
      results staying `dtype` (`precision.dot_general`, the "bfloat16_matmuls" compute dtype); None: `dtype`.
  """
  horizon: int
  n_obs_steps: int
  num_layers: int = 8
  num_heads: int = 4
  width: int = 256
  embed_dropout: float = 0.0
  attn_dropout: float = 0.01
  causal_attn: bool = True
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  def _embed(self, tokens: jax.Array, name: str, train: bool) -> jax.Array:
    positions = self.param(name, _init, (1, tokens.shape[1], self.width))
    return nn.Dropout(self.embed_dropout)(tokens + positions, deterministic=not train)

  @nn.compact
  def __call__(self, x: Optional[jax.Array], k: Optional[jax.Array], obs_features: Optional[jax.Array], train: bool,
               conditioning: Optional[jax.Array] = None, conditioning_only: bool = False) -> jax.Array:
    """x: [B, T, Da]; k: int [B] diffusion steps; obs_features: [B, To, F] -> [B, T, Da].

    `conditioning` is what depends on (k, obs_features) only, from an earlier `conditioning_only=True` call (which
    returns it and runs nothing else): the decoder's memory [B, 1 + To, w]. Given, k and obs_features are unused.
    """
    memory = self._condition(k, obs_features, train) if conditioning is None else conditioning
    if conditioning_only:
      return memory

    batch, horizon, action_dim = x.shape
    chex.assert_shape(x, (batch, self.horizon, action_dim),
                      custom_message=f"x must be [B, horizon={self.horizon}, Da]")
    h = self._embed(_dense(self.width, self.dtype, "input_emb", self.matmul_dtype)(x), "pos_emb", train)  # [B, T, w]
    self_mask = causal_mask(horizon) if self.causal_attn else None
    cross_mask = memory_mask(horizon, memory.shape[1]) if self.causal_attn else None
    for i in range(self.num_layers):
      h = DecoderLayer(self.width, self.num_heads, self.attn_dropout, self.dtype, self.matmul_dtype, name=f"layer{i}")(
          h, memory, self_mask, cross_mask, train)
    h = _layer_norm(self.dtype, "ln_f")(h)
    return _dense(action_dim, self.dtype, "head", self.matmul_dtype)(h).astype(jnp.float32)

  def _condition(self, k: jax.Array, obs_features: jax.Array, train: bool) -> jax.Array:
    """k [B], obs_features [B, To, F] -> the memory [B, 1 + To, w]: [time token, observation tokens] + learned
    positions, through the condition MLP (Linear 4w, Mish, Linear w)."""
    batch = jnp.shape(k)[0]
    chex.assert_shape(k, (batch,), custom_message="k must be [B]")
    chex.assert_shape(obs_features, (batch, self.n_obs_steps, None),
                      custom_message=f"obs_features must be [B={batch}, To={self.n_obs_steps}, F]")
    time_emb = sinusoidal_embedding(k.astype(jnp.float32), self.width)[:, None, :]  # [B, 1, w]
    obs_emb = _dense(self.width, self.dtype, "cond_obs_emb", self.matmul_dtype)(obs_features)
    cond = self._embed(jnp.concatenate([time_emb.astype(obs_emb.dtype), obs_emb], axis=1), "cond_pos_emb", train)
    cond = _dense(4 * self.width, self.dtype, "cond_mlp1", self.matmul_dtype)(cond)
    return _dense(self.width, self.dtype, "cond_mlp2", self.matmul_dtype)(jax.nn.mish(cond))
