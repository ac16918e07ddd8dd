"""Coordinate-wise LSTM optimizer (Andrychowicz et al. 2016, "Learning to learn by
gradient descent by gradient descent").

One small LSTM (2 layers, hidden 20 by default) with shared weights runs on every
coordinate of every parameter tensor independently. Its input is the gradient after the
paper's log-magnitude/sign preprocessing (``p = 10``); a linear readout times
``output_scale`` (0.1) is the update. Each coordinate keeps its own LSTM state in the
optimizer state (``num_layers * 2 * hidden`` floats per parameter).

A learnable scalar ``skip`` adds ``-skip * grad`` to the update. It starts at 0 (the
paper's pure-LSTM rule) and lets θ express plain gradient descent exactly, which the
tests use as an independent check.

The LSTM building blocks here (``init_lstm``, ``lstm_apply``, ``preprocess_gradient``)
are shared with the math-structured rule (``math_l2o``) and the per-tensor LSTM of the
VeLO-style hypernetwork (``hypernet``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt.base import LearnedOptimizer, register

# (h, c) per layer, each of shape (..., hidden).
LSTMState = Tuple[Tuple[jax.Array, jax.Array], ...]


def preprocess_gradient(g: jax.Array, p: float = 10.0) -> jax.Array:
  """The paper's gradient preprocessing, shape ``(...) -> (..., 2)``.

  ``(log|g| / p, sign(g))`` where ``|g| >= exp(-p)``, else ``(-1, exp(p) * g)``: the
  log-magnitude spans the gradient's scale while staying O(1), and tiny gradients stay
  distinguishable (and differentiable) through the linear branch.
  """
  big = jnp.abs(g) >= jnp.exp(-p)
  # where-safe log: the unused branch must not produce NaN gradients at g == 0.
  safe_abs = jnp.where(big, jnp.abs(g), 1.0)
  log_mag = jnp.where(big, jnp.log(safe_abs) / p, -1.0)
  sign = jnp.where(big, jnp.sign(g), jnp.exp(p) * g)
  return jnp.stack([log_mag, sign], axis=-1).astype(g.dtype)


def init_lstm(key: jax.Array, input_size: int, hidden: int, num_layers: int) -> List[dict]:
  """Weights of a stacked LSTM: per layer ``wx (in, 4H)``, ``wh (H, 4H)``, ``b (4H,)``.

  Gate order in the ``4H`` axis: input, forget, cell candidate, output. The forget gate
  bias starts at 1 so the memory is kept by default.
  """
  layers = []
  size = input_size
  for k in jax.random.split(key, num_layers):
    kx, kh = jax.random.split(k)
    wx = jax.random.normal(kx, (size, 4 * hidden), jnp.float32) / jnp.sqrt(size)
    wh = jax.random.normal(kh, (hidden, 4 * hidden), jnp.float32) / jnp.sqrt(hidden)
    b = jnp.zeros((4 * hidden,), jnp.float32).at[hidden:2 * hidden].set(1.0)
    layers.append({"wx": wx, "wh": wh, "b": b})
    size = hidden
  return layers


def zero_lstm_state(shape: Tuple[int, ...], hidden: int, num_layers: int,
                    dtype=jnp.float32) -> LSTMState:
  """All-zero (h, c) per layer, each of shape ``shape + (hidden,)``."""
  z = jnp.zeros(tuple(shape) + (hidden,), dtype)
  return tuple((z, z) for _ in range(num_layers))


def lstm_apply(layers: List[dict], x: jax.Array,
               state: LSTMState) -> Tuple[jax.Array, LSTMState]:
  """One step of the stacked LSTM on every leading index independently.

  Args:
    layers: weights from ``init_lstm``.
    x: ``(..., input_size)`` inputs.
    state: ``(h, c)`` per layer, each ``(..., hidden)``.
  Returns:
    ``(h_top, new_state)`` with ``h_top`` of shape ``(..., hidden)``.
  """
  new_state = []
  inp = x
  for layer, (h, c) in zip(layers, state):
    z = inp @ layer["wx"] + h @ layer["wh"] + layer["b"]
    i, f, u, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    new_state.append((h, c))
    inp = h
  return inp, tuple(new_state)


def compute_dtype(x: jax.Array):
  """At least float32 (bf16 params are updated in float32), float64 when x is."""
  return jnp.promote_types(x.dtype, jnp.float32)


class LSTMOptState(NamedTuple):
  """State of the coordinate-wise LSTM optimizer.

  Attributes:
    step: int32 scalar, number of updates applied.
    lstm: pytree matching the params; each leaf an ``LSTMState`` whose arrays have
      shape ``param.shape + (hidden,)``.
  """
  step: jax.Array
  lstm: Any


@register
class CoordinateLSTM(LearnedOptimizer):
  """Andrychowicz et al. (2016) coordinate-wise LSTM optimizer."""

  arch = "lstm"

  @dataclasses.dataclass(frozen=True)
  class Config:
    """Attributes:
      hidden: LSTM hidden size per layer (paper: 20).
      num_layers: stacked LSTM layers (paper: 2).
      preprocess_p: ``p`` of the gradient preprocessing (paper: 10).
      output_scale: multiplier of the readout (paper: 0.1).
      readout_init_scale: std of the initial readout weights (small, so the first
        updates are small).
      skip_init: initial value of the learnable ``skip`` (update gets ``-skip * g``).
    """
    hidden: int = 20
    num_layers: int = 2
    preprocess_p: float = 10.0
    output_scale: float = 0.1
    readout_init_scale: float = 0.01
    skip_init: float = 0.0

    def __post_init__(self):
      if self.hidden < 1 or self.num_layers < 1:
        raise ValueError(f"lstm: hidden ({self.hidden}) and num_layers ({self.num_layers}) "
                         "must be >= 1.")
      if self.preprocess_p <= 0:
        raise ValueError(f"lstm: preprocess_p must be > 0, got {self.preprocess_p}.")

  def init_meta_params(self, key):
    """θ = {"lstm": [per-layer wx/wh/b], "readout": {"w": (H,), "b": ()}, "skip": ()}."""
    # One compiled program instead of one per eager random op.
    return jax.jit(self._init_meta_params)(key)

  def _init_meta_params(self, key):
    cfg = self.config
    k_lstm, k_out = jax.random.split(key)
    return {
        "lstm": init_lstm(k_lstm, 2, cfg.hidden, cfg.num_layers),
        "readout": {
            "w": cfg.readout_init_scale * jax.random.normal(k_out, (cfg.hidden,), jnp.float32),
            "b": jnp.zeros((), jnp.float32),
        },
        "skip": jnp.asarray(cfg.skip_init, jnp.float32),
    }

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    """The learned rule; ``num_steps``, ``param_info`` and ``value`` are not used (the
    paper's optimizer is horizon-free and sees only gradients)."""
    del num_steps, param_info
    cfg = self.config

    def init_fn(params):
      lstm_state = jax.tree_util.tree_map(
          lambda p: zero_lstm_state(p.shape, cfg.hidden, cfg.num_layers, compute_dtype(p)),
          params)
      return LSTMOptState(step=jnp.zeros((), jnp.int32), lstm=lstm_state)

    def update_fn(updates, state, params=None, **extra_args):
      del params, extra_args
      grads = updates
      treedef = jax.tree_util.tree_structure(grads)
      g_leaves = treedef.flatten_up_to(grads)
      s_leaves = treedef.flatten_up_to(state.lstm)
      new_updates, new_states = [], []
      for g, s in zip(g_leaves, s_leaves):
        g32 = g.astype(compute_dtype(g))
        h, s = lstm_apply(theta["lstm"], preprocess_gradient(g32, cfg.preprocess_p), s)
        out = h @ theta["readout"]["w"] + theta["readout"]["b"]
        u = cfg.output_scale * out - theta["skip"] * g32
        new_updates.append(u.astype(g.dtype))
        new_states.append(s)
      return (treedef.unflatten(new_updates),
              LSTMOptState(step=optax.safe_increment(state.step),
                           lstm=treedef.unflatten(new_states)))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
