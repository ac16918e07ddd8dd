"""Adafactor-feature MLP learned optimizer (``adafactor_mlp``), AdafacMLPLOpt style.

A tiny per-parameter MLP (hidden 4x2 by default, so it is cheap) reads, besides the
gradient, the parameter, momenta (0.9, 0.99, 0.999) and a squared-gradient EMA
(0.999), *factored* second-moment accumulators at decays (0.9, 0.99, 0.999) as in
Adafactor (Shazeer & Stern 2018): for a tensor of shape ``S = (..., m, n)``

    row = d * row + (1 - d) * mean(g^2 + 1e-30, axis=-1)         # S[:-1]
    col = d * col + (1 - d) * mean(g^2 + 1e-30, axis=-2)         # S[:-2] + (n,)
    v   = row[..., :, None] * col[..., None, :] / mean(row, -1)  # reconstruction

so their memory for an ``(m, n)`` matrix is ``O(m + n)`` per decay (vectors and
scalars keep a full accumulator). Features (``metaopt.lopt.features``): ``rsqrt(v)``,
``g * rsqrt(v)``, ``momentum * rsqrt(v)`` for every pair, plus the small_fc ones and
the tanh step embedding. The update is ``-d * exp(m * exp_mult) * step_mult``.
Unlike learned_optimization's AdafacMLPLOpt the decays are fixed config values, not
meta-learned. Horizon-free (``num_steps`` is ignored).

Speed: for the small default network the features are never stacked. Every input
column is a product of a few tensor-shaped arrays (gradient, parameter, accumulator
slices, the rsqrt preconditioners, the factored reconstruction one decay at a time);
the per-tensor normalization is folded into the first layer's weights and columns
sharing a preconditioner are grouped, so XLA evaluates features and network in one
elementwise loop (``_factored_first_layer``). Gradients w.r.t. theta go through the
matmul form (``mlp.fused_mlp``'s backward).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import features as F
from metaopt.lopt import mlp
from metaopt.lopt.base import register

#: Added to g^2 before the factored means (Adafactor's epsilon1, optax's default).
FACTORED_EPS = 1e-30
#: Largest squared gradient entering the factored accumulators (they stay finite for
#: any finite gradient; larger squares only occur for gradients above 1e15).
MAX_SQUARE = 1e30


@dataclasses.dataclass(frozen=True)
class AdafactorMLPConfig:
  """Config of the Adafactor-feature MLP learned optimizer.

  Attributes:
    hidden_sizes: hidden widths of the per-parameter MLP.
    momentum_decays: gradient EMA decays (feature ``momenta``).
    rms_decays: squared-gradient EMA decays (full, per element).
    factored_decays: decays of the factored (row/column) accumulators.
    timescales: step-embedding timescales.
    features: input feature names (``metaopt.lopt.features``).
    exp_mult, step_mult: step scales, as in ``mlp``.
  """
  hidden_sizes: Tuple[int, ...] = (4, 4)
  momentum_decays: Tuple[float, ...] = (0.9, 0.99, 0.999)
  rms_decays: Tuple[float, ...] = (0.999,)
  factored_decays: Tuple[float, ...] = (0.9, 0.99, 0.999)
  timescales: Tuple[float, ...] = F.DEFAULT_TIMESCALES
  features: Tuple[str, ...] = ("grad", "param", "momenta", "rsqrt_rms", "momenta_rsqrt_rms",
                               "rsqrt_factored", "grad_rsqrt_factored",
                               "momenta_rsqrt_factored", "time")
  exp_mult: float = 1e-3
  step_mult: float = 1e-3


class Factored(NamedTuple):
  """Second-moment accumulators of one tensor at ``K`` decays.

  Matrices (ndim >= 2): ``row (S[:-1] + (K,))``, ``col (S[:-2] + (n, K))``, ``full``
  None. Vectors/scalars: ``full (S + (K,))``, ``row``/``col`` None.
  """
  row: Optional[jax.Array]
  col: Optional[jax.Array]
  full: Optional[jax.Array]


class AdafactorMLPState(NamedTuple):
  """``count`` int32; ``momenta``/``rms`` per leaf ``S + (D,)``; ``factored`` per leaf
  a ``Factored``."""
  count: jax.Array
  momenta: Any
  rms: Any
  factored: Any


def init_factored(p, num_decays: int, dtype=jnp.float32) -> Factored:
  shape = jnp.shape(p)
  if len(shape) >= 2:
    return Factored(jnp.zeros(shape[:-1] + (num_decays,), dtype),
                    jnp.zeros(shape[:-2] + shape[-1:] + (num_decays,), dtype), None)
  return Factored(None, None, jnp.zeros(shape + (num_decays,), dtype))


def update_factored(acc: Factored, g: jax.Array, decays: jax.Array) -> Factored:
  """One step of the factored accumulators (module docstring) at every decay."""
  # Clipped below overflow: the row and column means of an overflowed square would be
  # inf and their reconstruction inf / inf (a gradient of 1e30 would give NaN).
  g2 = jnp.minimum(jnp.square(g), MAX_SQUARE) + FACTORED_EPS
  if acc.full is not None:
    return Factored(None, None, F.ema(acc.full, g2, decays))
  return Factored(F.ema(acc.row, jnp.mean(g2, axis=-1), decays),
                  F.ema(acc.col, jnp.mean(g2, axis=-2), decays), None)


def reconstruct(acc: Factored) -> jax.Array:
  """The second-moment estimate ``S + (K,)`` from the accumulators."""
  if acc.full is not None:
    return acc.full
  row_mean = jnp.mean(acc.row, axis=-2, keepdims=True)  # mean over m, per decay
  return (acc.row / row_mean)[..., :, None, :] * acc.col[..., None, :, :]


def _context(config, grad, param, momenta, rms, factored, step):
  shape = mlp.as_vector_shape(param).shape
  return {
      "grad": grad.reshape(shape), "param": param.reshape(shape),
      "momenta": momenta.reshape(shape + momenta.shape[-1:]),
      "rms": rms.reshape(shape + rms.shape[-1:]),
      "factored": reconstruct(factored).reshape(shape + (len(config.factored_decays),)),
      "step": step, "timescales": jnp.asarray(config.timescales, jnp.float32),
  }


def _reconstruct_columns(acc: Factored, shape) -> list:
  """``reconstruct(acc)[..., k]`` for every decay ``k``, each of tensor shape (the
  same arithmetic, one decay at a time: no ``S + (K,)`` array is formed)."""
  num = (acc.full if acc.full is not None else acc.row).shape[-1]
  if acc.full is not None:
    return [acc.full[..., k].reshape(shape) for k in range(num)]
  row_mean = jnp.mean(acc.row, axis=-2, keepdims=True)
  return [((acc.row[..., k] / row_mean[..., k])[..., :, None]
           * acc.col[..., None, :, k]).reshape(shape) for k in range(num)]


def _builtin_factors(name, n_mom, n_rms, n_fac):
  """Columns of a built-in feature as products of base arrays, in the order of
  ``F.FEATURES[name].fn`` on the stacked context. Base indices: 0 grad, 1 param,
  then ``n_mom`` momenta, ``n_rms`` rsqrt(rms), ``n_fac`` rsqrt(factored)."""
  ms = [2 + i for i in range(n_mom)]
  rv = [2 + n_mom + i for i in range(n_rms)]
  rf = [2 + n_mom + n_rms + i for i in range(n_fac)]
  return {
      "grad": [(0,)], "param": [(1,)], "momenta": [(m,) for m in ms],
      "rsqrt_rms": [(r,) for r in rv],
      "momenta_rsqrt_rms": [(m, r) for m in ms for r in rv],
      "grad_rsqrt_rms": [(0, r) for r in rv],
      "rsqrt_factored": [(r,) for r in rf],
      "grad_rsqrt_factored": [(0, r) for r in rf],
      "momenta_rsqrt_factored": [(m, r) for m in ms for r in rf],
  }[name]


_BUILTIN = ("grad", "param", "momenta", "rsqrt_rms", "momenta_rsqrt_rms", "grad_rsqrt_rms",
            "rsqrt_factored", "grad_rsqrt_factored", "momenta_rsqrt_factored")


def _prod(base, factors):
  out = base[factors[0]]
  for i in factors[1:]:
    out = out * base[i]
  return out


def _columns(config, feats, grad, param, momenta, rms, factored, step):
  """Inputs of one tensor: ``F.build_columns(feats, _context(...))`` computed per decay.

  Returns ``(base, specs, scales, cols)``: every input column ``c`` equals
  ``scales[c] * prod(base[i] for i in specs[c])``, where ``base`` holds arrays of the
  tensor's shape (gradient, parameter, slices of the accumulators, the rsqrt
  preconditioners, the factored reconstruction one decay at a time) and per-tensor
  scalars; ``cols`` are the normalized columns themselves (``build_columns``).
  Features not built in (registered elsewhere) are evaluated on the full context
  and enter ``base`` whole.
  """
  shape = mlp.as_vector_shape(param).shape
  n_mom, n_rms = momenta.shape[-1], rms.shape[-1]
  base = ([grad.reshape(shape), param.reshape(shape)]
          + [momenta[..., k].reshape(shape) for k in range(n_mom)]
          + [F.rsqrt(rms[..., k].reshape(shape)) for k in range(n_rms)]
          + [F.rsqrt(v) for v in _reconstruct_columns(factored, shape)])
  n_fac = len(base) - 2 - n_mom - n_rms
  ctx = {"grad": base[0], "param": base[1],
         "momenta": momenta.reshape(shape + (n_mom,)), "rms": rms.reshape(shape + (n_rms,)),
         "step": step, "timescales": jnp.asarray(config.timescales, jnp.float32)}
  specs, normalize = [], []
  for f in F.column_order(feats):
    if f.name in _BUILTIN and F.FEATURES.get(f.name) is f:
      spec = _builtin_factors(f.name, n_mom, n_rms, n_fac)
    else:
      if "factored" in f.needs and "factored" not in ctx:
        ctx["factored"] = reconstruct(factored).reshape(shape + (n_fac,))
      val = f.fn(ctx)
      spec = [(len(base) + i,) for i in range(val.shape[-1])]
      base = base + [val[..., i] for i in range(val.shape[-1])]
    specs.extend(spec)
    normalize.extend([f.normalize and not f.per_tensor] * len(spec))
  raw = [_prod(base, sp) for sp in specs]
  one = jnp.ones((), base[0].dtype)
  scales = [one] * len(raw)
  idx = [i for i, n in enumerate(normalize) if n]
  if idx:
    size = raw[idx[0]].size
    sums = F.sums_of_squares([raw[i] for i in idx])
    for k, i in enumerate(idx):
      scales[i] = jax.lax.rsqrt(F.NORM_EPS + sums[k] / size)
  cols = [c * s if n else c for c, s, n in zip(raw, scales, normalize)]
  return base, specs, jnp.stack(scales), cols


def _factored_first_layer(first, base, specs, scales):
  """First-layer pre-activations ``b_j + sum_c cols[c] * w[c, j]`` with the column
  scales folded into ``w`` and the columns sharing a last factor (the rsqrt
  preconditioners) grouped: ``r * (sum_c w'[c, j] * rest_c)``. Only the ``base``
  arrays are read, so XLA evaluates the whole network in one elementwise loop
  instead of writing every product column."""
  w = scales.astype(first["w"].dtype)[:, None] * first["w"]
  groups = {}
  for c, sp in enumerate(specs):
    key = sp[-1] if len(sp) > 1 else None
    groups.setdefault(key, []).append(c)
  out = []
  for j in range(w.shape[1]):
    acc = first["b"][j]
    for key, cs in groups.items():
      terms = None
      for c in cs:
        sp = specs[c] if key is None else specs[c][:-1]
        t = _prod(base, sp) * w[c, j]
        terms = t if terms is None else terms + t
      acc = acc + (terms if key is None else base[key] * terms)
    out.append(acc)
  return out


def _make_factored_mlp(specs):
  """``mlp.fused_mlp(layers, cols)`` evaluated from ``(base, scales)`` (see
  ``_factored_first_layer``); its gradient goes through ``cols`` (matmul form)."""

  @jax.custom_vjp
  def f(layers, base, scales, cols):
    del cols  # same values, reconstructed from base and scales
    h = [jax.nn.relu(x) if len(layers) > 1 else x
         for x in _factored_first_layer(layers[0], base, specs, scales)]
    return mlp.apply_mlp_columns(layers[1:], h) if len(layers) > 1 else h

  def fwd(layers, base, scales, cols):
    return f(layers, base, scales, cols), (layers, base, scales, cols)

  def bwd(res, cts):
    layers, base, scales, cols = res
    d_layers, d_cols = mlp.fused_mlp_bwd((layers, cols), cts)
    zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)
    return d_layers, zeros(base), zeros(scales), d_cols

  f.defvjp(fwd, bwd)
  return f


def _example_context(config):
  p = jnp.zeros((2, 3), jnp.float32)
  acc = lambda n: jnp.zeros((2, 3, n), jnp.float32)
  return _context(config, p, p, acc(len(config.momentum_decays)), acc(len(config.rms_decays)),
                  init_factored(p, len(config.factored_decays)), jnp.zeros((), jnp.int32))


def scale_by_adafactor_mlp(config: AdafactorMLPConfig, theta
                           ) -> optax.GradientTransformationExtraArgs:
  """The Adafactor-feature MLP rule as an optax transformation (theta may be traced)."""
  feats = F.get(config.features)
  F.check_context(feats, _example_context(config))
  mom_d = jnp.asarray(config.momentum_decays, jnp.float32)
  rms_d = jnp.asarray(config.rms_decays, jnp.float32)
  fac_d = jnp.asarray(config.factored_decays, jnp.float32)

  def init_fn(params):
    def acc(n):
      return jax.tree_util.tree_map(
          lambda p: jnp.zeros(jnp.shape(p) + (n,), mlp.compute_dtype(p)), params)
    factored = jax.tree_util.tree_map(
        lambda p: init_factored(p, len(config.factored_decays), mlp.compute_dtype(p)), params)
    return AdafactorMLPState(jnp.zeros((), jnp.int32), acc(len(config.momentum_decays)),
                             acc(len(config.rms_decays)), factored)

  def update_fn(grads, state, params=None, **extra_args):
    del extra_args
    mlp.check_params(params, "adafactor_mlp")
    g_leaves, treedef = jax.tree_util.tree_flatten(grads)
    p_leaves = treedef.flatten_up_to(params)
    g_leaves = [jnp.asarray(g, mlp.compute_dtype(p)) for g, p in zip(g_leaves, p_leaves)]
    m_leaves = [F.ema(m, g, mom_d) for m, g in zip(treedef.flatten_up_to(state.momenta), g_leaves)]
    v_leaves = [F.ema(v, jnp.square(g), rms_d)
                for v, g in zip(treedef.flatten_up_to(state.rms), g_leaves)]
    f_leaves = [update_factored(f, g, fac_d)
                for f, g in zip(treedef.flatten_up_to(state.factored), g_leaves)]
    args = [(g, jnp.asarray(p, g.dtype), m, v, f, state.count)
            for g, p, m, v, f in zip(g_leaves, p_leaves, m_leaves, v_leaves, f_leaves)]
    layers = theta["layers"]
    if mlp.mlp_macs(layers) <= mlp.FUSE_MAX_MACS:
      # Same math as mlp.direction_magnitude_updates' fused path, with the columns
      # built per decay (_columns) so that nothing of size S + (K,) is written.
      updates = []
      for a, p in zip(args, p_leaves):
        base, specs, scales, cols = _columns(config, feats, *a)
        d, m = _make_factored_mlp(specs)(layers, base, scales, cols)
        step = (d * jnp.exp(m * config.exp_mult) * config.step_mult).reshape(jnp.shape(p))
        updates.append((-step).astype(jnp.result_type(p)))
    else:
      contexts = [_context(config, *a) for a in args]
      updates = mlp.direction_magnitude_updates(layers, feats, contexts, p_leaves,
                                                config.exp_mult, config.step_mult)
    new_state = AdafactorMLPState(optax.safe_increment(state.count),
                                  treedef.unflatten(m_leaves), treedef.unflatten(v_leaves),
                                  treedef.unflatten(f_leaves))
    return treedef.unflatten(updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@register
class AdafactorMLPLOpt(mlp.MLPLOpt):
  """Adafactor-feature per-parameter MLP (module docstring); the MLP, its sizes and
  its initialization are ``MLPLOpt``'s."""

  arch = "adafactor_mlp"
  Config = AdafactorMLPConfig

  def example_context(self):
    return _example_context(self.config)

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    del num_steps, param_info  # horizon-free, standard parametrization
    return scale_by_adafactor_mlp(self.config, theta)

  def flops_per_param(self) -> int:
    """Arithmetic per parameter per step: MLP + EMAs (3 per full accumulator; the
    factored ones are O(m+n), ~3 per decay for the means) + ~3 per input column +
    ~4 per decay for the reconstruction."""
    c = self.config
    acc = 3 * (len(c.momentum_decays) + len(c.rms_decays)) + 7 * len(c.factored_decays)
    return mlp.mlp_flops(self.layer_sizes) + acc + 3 * self.num_inputs + 6
