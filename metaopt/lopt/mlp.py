"""Per-parameter MLP learned optimizer (``mlp``), small_fc style.

A small MLP (hidden 32x2 by default) is applied to every scalar parameter
independently. Its inputs are named features (``metaopt.lopt.features``): by
default the gradient, the parameter, gradient momenta at decays
(0.1, 0.5, 0.9, 0.99, 0.999, 0.9999), ``rsqrt`` of a squared-gradient EMA and the
momenta times that ``rsqrt`` (all second-moment normalized per tensor), and the tanh
step embedding at timescales 1...100k (not normalized). It outputs a direction
``d`` and a magnitude ``m`` per parameter; the update is

    update = -d * exp(m * exp_mult) * step_mult        (exp_mult = step_mult = 1e-3)

as in learned_optimization's MLPLOpt. There is no learning rate. The rule does not
use the training horizon: ``num_steps`` is accepted and ignored (horizon-free).

Speed: the MLP runs as one matmul per layer over all elements of a tensor, with the
per-tensor feature normalization folded into the first layer's weights and the
per-tensor time features into its bias; small networks (e.g. hidden 4x2) are
instead unrolled into elementwise ops that XLA fuses with the features.

Meta-parameters ``theta = {"layers": ({"w": (fan_in, fan_out), "b": (fan_out,)}, ...)}``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.lopt import features as F
from metaopt.lopt.base import LearnedOptimizer, register

# ----------------------------------------------------------------------------------
# The per-parameter network (shared by the MLP-family architectures).


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> Tuple[dict, ...]:
  """Dense layers ``sizes[0] -> ... -> sizes[-1]``.

  Weights are fan-in scaled truncated normals (haiku's default initializer), biases
  zero. Returns a tuple of ``{"w": (n_in, n_out), "b": (n_out,)}`` float32.
  """
  layers = []
  for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
    # 0.8796 is the stddev of a unit normal truncated at +-2.
    w = jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out), jnp.float32)
    layers.append({"w": w / (0.87962566 * math.sqrt(n_in)), "b": jnp.zeros((n_out,), jnp.float32)})
  return tuple(layers)


def apply_mlp(layers: Sequence[dict], x: jax.Array) -> jax.Array:
  """ReLU MLP, linear last layer: ``(N, n_in) -> (N, n_out)``."""
  for i, layer in enumerate(layers):
    x = x @ layer["w"] + layer["b"]
    if i < len(layers) - 1:
      x = jax.nn.relu(x)
  return x


def apply_mlp_columns(layers: Sequence[dict], cols: Sequence[jax.Array]):
  """``apply_mlp`` on a list of input columns, unrolled into elementwise ops.

  Each column is an array of one tensor's shape (or a scalar, broadcast); every
  hidden unit is ``relu(b_j + sum_i col_i * w[i, j])`` with scalar weights, so XLA
  fuses features and network into one loop over the tensor without materializing
  a ``(num_params, F)`` matrix. Worth it for small networks (``FUSE_MAX_MACS``).
  Returns the list of output columns.
  """
  h = list(cols)
  for li, layer in enumerate(layers):
    w, b = layer["w"], layer["b"]
    nxt = []
    for j in range(w.shape[1]):
      acc = b[j]
      for i, col in enumerate(h):
        acc = acc + col * w[i, j]
      nxt.append(jax.nn.relu(acc) if li < len(layers) - 1 else acc)
    h = nxt
  return h


@jax.custom_vjp
def fused_mlp(layers: Sequence[dict], cols: Sequence[jax.Array]):
  """``apply_mlp_columns`` forward; its gradient is computed through the matmul form.

  Differentiating the unrolled graph would create one reduction per weight and a
  very large program (XLA's simplifier struggles with it), so the backward pass
  re-runs the network as matmuls on the stacked columns. Being a ``custom_vjp``, it
  supports reverse mode (``jax.grad``), not forward mode (``jax.jvp``).
  """
  return apply_mlp_columns(layers, cols)


def _stacked_mlp(layers, cols):
  shape = jnp.broadcast_shapes(*[jnp.shape(c) for c in cols])
  x = jnp.stack([jnp.broadcast_to(c, shape) for c in cols], axis=-1)
  out = apply_mlp(layers, x.reshape(-1, len(cols)))
  return [out[:, j].reshape(shape) for j in range(out.shape[-1])]


def _fused_mlp_fwd(layers, cols):
  return apply_mlp_columns(layers, cols), (layers, cols)


def fused_mlp_bwd(res, cotangents):
  """The VJP of ``fused_mlp`` (``res = (layers, cols)``), through the stacked matmul
  form; also the backward pass of ``adafactor_mlp``'s factored first layer."""
  layers, cols = res
  _, vjp = jax.vjp(_stacked_mlp, layers, cols)
  shape = jnp.broadcast_shapes(*[jnp.shape(c) for c in cols])
  return vjp([jnp.broadcast_to(c, shape) for c in cotangents])


fused_mlp.defvjp(_fused_mlp_fwd, fused_mlp_bwd)


#: Per-parameter networks with at most this many multiply-adds per row are
#: evaluated with ``apply_mlp_columns`` (fused), bigger ones as batched matmuls.
FUSE_MAX_MACS = 512


def mlp_macs(layers: Sequence[dict]) -> int:
  return sum(int(np.prod(layer["w"].shape)) for layer in layers)


def mlp_flops(sizes: Sequence[int]) -> int:
  """Multiply-add FLOPs (2 per MAC, + bias and ReLU) of one ``apply_mlp`` row."""
  return sum(2 * a * b + 2 * b for a, b in zip(sizes[:-1], sizes[1:]))


def as_vector_shape(x: jax.Array) -> jax.Array:
  """Scalars become shape ``(1,)`` so that every tensor has an element axis."""
  return x.reshape((1,)) if x.ndim == 0 else x


def compute_dtype(p) -> jnp.dtype:
  """float32 for float32/bf16/fp16 parameters, float64 for float64 (x64 tests)."""
  return jnp.promote_types(jnp.result_type(p), jnp.float32)


def direction_magnitude_updates(layers, feats, contexts, p_leaves, exp_mult, step_mult,
                                step_scales=None):
  """Runs the per-parameter MLP on every tensor at once and forms the updates.

  Small networks (``FUSE_MAX_MACS``) are unrolled per tensor into elementwise ops
  that XLA fuses with the features (one pass over memory); larger ones run one
  matmul per layer and tensor, with the per-tensor normalization folded into the
  first layer's weights and the per-tensor (time) features into its bias
  (``features.split_inputs``). The two outputs give
  ``update = -d * exp(m * exp_mult) * step_mult (* step_scales[i])``.

  Args:
    layers: ``init_mlp`` layers with 2 outputs.  feats: ``features.get(...)``.
    contexts: one feature context per tensor.  p_leaves: the parameter leaves.
    step_scales: optional per-tensor Python floats.
  Returns:
    List of updates shaped and typed like ``p_leaves``.
  """
  if mlp_macs(layers) <= FUSE_MAX_MACS:
    step_leaves = []
    for c, p in zip(contexts, p_leaves):
      d, m = fused_mlp(layers, F.build_columns(feats, c))
      step_leaves.append((d * jnp.exp(m * exp_mult) * step_mult).reshape(jnp.shape(p)))
  else:
    step_leaves = []
    first, rest = layers[0], layers[1:]
    for c, p in zip(contexts, p_leaves):
      # Normalization folded into the first layer, per-tensor features into its bias.
      x, scales, per_tensor = F.split_inputs(feats, c)
      k = x.shape[-1]
      h = x @ (scales[:, None] * first["w"][:k]) + (per_tensor @ first["w"][k:] + first["b"])
      out = apply_mlp(rest, jax.nn.relu(h)) if rest else h
      steps = out[:, 0] * jnp.exp(out[:, 1] * exp_mult) * step_mult
      step_leaves.append(steps.reshape(jnp.shape(p)))
  if step_scales is not None:
    step_leaves = [s * c for s, c in zip(step_leaves, step_scales)]
  return [(-s).astype(jnp.result_type(p)) for s, p in zip(step_leaves, p_leaves)]


def check_params(params, name: str) -> None:
  if params is None:
    raise ValueError(f"The {name!r} learned optimizer reads parameter values: call "
                     f"update(grads, state, params) with params (optax passes them as "
                     f"the third argument).")


# ----------------------------------------------------------------------------------
# The architecture.


@dataclasses.dataclass(frozen=True)
class MLPConfig:
  """Config of the per-parameter MLP learned optimizer.

  Attributes:
    hidden_sizes: hidden layer widths of the per-parameter MLP.
    momentum_decays: decays of the gradient EMAs (feature ``momenta``).
    rms_decays: decays of the squared-gradient EMAs (features ``*_rms``).
    timescales: step-embedding timescales (feature ``time``).
    features: names of the input features (see ``metaopt.lopt.features.FEATURES``).
    exp_mult: scale of the magnitude output inside the exponential.
    step_mult: overall step scale.
  """
  hidden_sizes: Tuple[int, ...] = (32, 32)
  momentum_decays: Tuple[float, ...] = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
  rms_decays: Tuple[float, ...] = (0.999,)
  timescales: Tuple[float, ...] = F.DEFAULT_TIMESCALES
  features: Tuple[str, ...] = ("grad", "param", "momenta", "rsqrt_rms",
                               "momenta_rsqrt_rms", "time")
  exp_mult: float = 1e-3
  step_mult: float = 1e-3


class MLPState(NamedTuple):
  """Optimizer state.

  Attributes:
    count: int32 scalar, number of updates applied so far.
    momenta: per param leaf ``shape + (M,)`` gradient EMAs.
    rms: per param leaf ``shape + (R,)`` squared-gradient EMAs.
  """
  count: jax.Array
  momenta: Any
  rms: Any


def _context(config, grad, param, momenta, rms, step):
  """Feature context of one tensor (see ``features``); scalars promoted to (1,)."""
  shape = as_vector_shape(param).shape
  return {
      "grad": grad.reshape(shape), "param": param.reshape(shape),
      "momenta": momenta.reshape(shape + momenta.shape[-1:]),
      "rms": rms.reshape(shape + rms.shape[-1:]),
      "step": step, "timescales": jnp.asarray(config.timescales, jnp.float32),
  }


def _example_context(config):
  z = jnp.zeros((2,), jnp.float32)
  return _context(config, z, z, jnp.zeros((2, len(config.momentum_decays))),
                  jnp.zeros((2, len(config.rms_decays))), jnp.zeros((), jnp.int32))


def scale_by_mlp(config: MLPConfig, theta,
                 step_scales=None) -> optax.GradientTransformationExtraArgs:
  """The per-parameter MLP rule as an optax transformation.

  Args:
    config: ``MLPConfig``.
    theta: meta-parameters (may be traced).
    step_scales: optional pytree of Python floats matching the params: a per-tensor
      multiplier of the step (μLO's per-layer learning-rate multipliers).
  """
  feats = F.get(config.features)
  F.check_context(feats, _example_context(config))
  mom_decays = jnp.asarray(config.momentum_decays, jnp.float32)
  rms_decays = jnp.asarray(config.rms_decays, jnp.float32)

  def init_fn(params):
    def acc(n):
      return jax.tree_util.tree_map(
          lambda p: jnp.zeros(jnp.shape(p) + (n,), compute_dtype(p)), params)
    return MLPState(jnp.zeros((), jnp.int32), acc(len(config.momentum_decays)),
                    acc(len(config.rms_decays)))

  def update_fn(grads, state, params=None, **extra_args):
    del extra_args  # this rule does not read the loss value
    check_params(params, "mlp")
    g32 = jax.tree_util.tree_map(lambda g, p: jnp.asarray(g, compute_dtype(p)), grads, params)
    momenta = jax.tree_util.tree_map(lambda m, g: F.ema(m, g, mom_decays), state.momenta, g32)
    rms = jax.tree_util.tree_map(lambda v, g: F.ema(v, jnp.square(g), rms_decays), state.rms, g32)

    g_leaves, treedef = jax.tree_util.tree_flatten(g32)
    p_leaves = treedef.flatten_up_to(params)
    m_leaves = treedef.flatten_up_to(momenta)
    v_leaves = treedef.flatten_up_to(rms)
    contexts = [_context(config, g, jnp.asarray(p, g.dtype), m, v, state.count)
                for g, p, m, v in zip(g_leaves, p_leaves, m_leaves, v_leaves)]
    scales = None if step_scales is None else treedef.flatten_up_to(step_scales)
    updates = direction_magnitude_updates(theta["layers"], feats, contexts, p_leaves,
                                          config.exp_mult, config.step_mult, scales)
    return treedef.unflatten(updates), MLPState(optax.safe_increment(state.count), momenta, rms)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@register
class MLPLOpt(LearnedOptimizer):
  """Per-parameter MLP learned optimizer (small_fc style). See the module docstring."""

  arch = "mlp"
  Config = MLPConfig

  def example_context(self):
    """The feature context of a tiny example tensor (for shape inference of the inputs;
    subclasses with other accumulators override it)."""
    return _example_context(self.config)

  @property
  def num_inputs(self) -> int:
    """Input width of the per-parameter MLP, derived from ``config.features``."""
    return F.num_inputs(F.get(self.config.features), self.example_context)

  @property
  def layer_sizes(self) -> Tuple[int, ...]:
    return (self.num_inputs,) + tuple(self.config.hidden_sizes) + (2,)

  def init_meta_params(self, key):
    return {"layers": init_mlp(key, self.layer_sizes)}

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    del num_steps, param_info  # horizon-free; standard parametrization
    return scale_by_mlp(self.config, theta)

  def flops_per_param(self) -> int:
    """Arithmetic per parameter per step: the MLP plus the feature math (EMAs: 3 FLOPs
    per accumulator; every input column: ~3 FLOPs for products/rsqrt/normalization)."""
    c = self.config
    acc = 3 * (len(c.momentum_decays) + len(c.rms_decays))
    return mlp_flops(self.layer_sizes) + acc + 3 * self.num_inputs + 6
