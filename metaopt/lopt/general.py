"""General-purpose learned optimizer (``general``): a learned per-tensor step-size
controller over Adam's normalized direction, plus a small per-parameter correction.

Designed to generalize rather than to fit one family (Celo, VeLO): the inputs of every
learned part are normalized, the update is a normalized direction whose size is set
by a learned *controller* of a per-tensor log step size, and the controller reads
signals that mean the same on any problem (the cosine between the new gradient and
the previous direction: a hypergradient), not raw losses or parameter scales. No
learning rate and no horizon are needed: the step size is a state adapted online.

Math, per parameter tensor ``p`` with gradient ``g_t`` at step ``t >= 1``:

    m_t = b1 m_{t-1} + (1 - b1) g_t        v_t = b2 v_{t-1} + (1 - b2) g_t^2
    a_t = mhat_t / (sqrt(vhat_t) + eps)                     (Adam's direction, debiased)
    h_t = <g_t, a_{t-1}> / (|g_t| |a_{t-1}| + eps)          (per tensor; H_t over all)
    hbar_t = 0.9 hbar_{t-1} + 0.1 h_t                       (and Hbar_t for H_t)
    u_t = gain * hbar_t + c_theta(h_t, hbar_t, H_t, Hbar_t, l_{t-1} - l0, time, kind)
    l_t = clip(l_{t-1} + D tanh(u_t / D), l_min, l_max)     (log step size; l_0 = l0)
    d_t = a_t + gamma * f_theta(x_t)                        (f: per-parameter MLP)
    p_{t+1} = p_t - D_t exp(l_t + s_kind) * mult_p * d_t

``D_t`` is 1, or with ``config.distance_adapt`` Prodigy's estimate of the distance
to a solution (Mishchenko & Defazio 2024), over all parameters ``x``; the moments
``m, v, m_slow`` then average ``D_t g_t`` (and ``eps`` becomes ``D_t eps``), so that
gradients seen while ``D`` was still tiny fade from them as in Prodigy:

    lam_t = (D_{t-1} / D_0) D_{t-1} sqrt(1 - b2^t) / (1 - b1^t)
    r_t = b3 r_{t-1} + lam_t <g_t, x_0 - x_t>       s_t = b3 s_{t-1} + lam_t g_t
    D_t = max(D_{t-1}, r_t / |s_t|_1)               (b3 = sqrt(b2))

a lower bound on ``|x_0 - x*|_inf`` for convex losses, whatever the trajectory, so the
learned multiplier ``exp(l_t)`` then starts near 1 on every problem instead of at one
learning rate for all scales.

``h > 0`` means the previous step was too short (the gradient still points the same
way), so the step size grows, ``h < 0`` that it overshot: multiplicative hypergradient
descent (Baydin et al. 2018) is the hand-designed prior (``gain``), ``c_theta`` (an MLP
whose last layer starts at zero) learns the rest.

Numerics: the rule stays finite wherever optax.adam does, without ``metaopt.safeguard``
(huge, tiny, constant, zero and sparse gradients: ``tests/lopt/test_finite.py``): a
cosine whose squared norms overflow is 0, and a step of the distance estimate whose
sums overflow leaves ``D_t`` as it was (a linear objective grows ``D`` without bound).
Both guards are the identity on finite values. ``f_theta`` reads the second-moment
normalized features (gradient, two momenta, ``a_t``, parameter) of each entry, also
starting at zero, so at initialization the rule is Adam with a hypergradient step
size. ``s_kind`` is a learned log scale per tensor kind (matrix, vector, scalar);
``mult_p`` is 1, or the μP multiplier of the tensor's role when ``config.mup``
(``metaopt.lopt.mulo.step_multipliers``; then ``transform`` needs ``param_info``).

Meta-parameters ``theta``: ``log_lr0 ()``, ``gain ()``, ``kind_log_scale (3,)``,
``controller`` and ``mlp`` (``init_mlp`` layers). ``num_steps`` is accepted and
ignored (horizon-free).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import features as F
from metaopt.lopt import mlp as mlp_lib
from metaopt.lopt import mulo
from metaopt.lopt.base import LearnedOptimizer, register

#: Tensor kinds with their own learned log scale: ndim >= 2, ndim == 1, ndim == 0.
KINDS = ("matrix", "vector", "scalar")
#: Inputs of the controller: h, hbar, H, Hbar, l - l0, three step-embedding timescales,
#: and the one-hot kind.
CONTROLLER_TIMESCALES = (10.0, 100.0, 1000.0)
NUM_CONTROLLER_INPUTS = 5 + len(CONTROLLER_TIMESCALES) + len(KINDS)
#: Per-parameter MLP inputs (second-moment normalized per tensor): g, m, m_slow, a, p.
NUM_MLP_INPUTS = 5


@dataclasses.dataclass(frozen=True)
class GeneralConfig:
  """Config of the general-purpose learned optimizer.

  Attributes:
    b1, b2, eps: Adam's decays and epsilon (the direction ``a_t``).
    slow_decay: decay of the slow momentum fed to the per-parameter MLP.
    init_lr: initial step size ``exp(l0)`` at theta's initialization.
    init_gain: initial hypergradient gain.
    max_log_change: ``D``, the largest change of the log step size per step.
    min_lr, max_lr: bounds of the step size ``exp(l_t)``.
    controller_hidden: hidden widths of the controller MLP.
    mlp_hidden: hidden widths of the per-parameter MLP (small: it runs per entry).
    mlp_scale: ``gamma``, the weight of the per-parameter MLP's output.
    mup: apply μP step multipliers (``transform`` then needs ``param_info``).
    distance_adapt: multiply the step size by Prodigy's distance estimate ``D_t``
      (module docstring); ``init_lr`` is then the initial multiplier of ``D_t``.
    d0: ``D_0``, the initial (under-)estimate of the distance.
  """
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  slow_decay: float = 0.99
  init_lr: float = 1e-3
  init_gain: float = 0.1
  max_log_change: float = 0.2
  min_lr: float = 1e-7
  max_lr: float = 1.0
  controller_hidden: Tuple[int, ...] = (16,)
  mlp_hidden: Tuple[int, ...] = (8,)
  mlp_scale: float = 0.1
  mup: bool = False
  distance_adapt: bool = False
  d0: float = 1e-6


class DistanceState(NamedTuple):
  """State of the distance estimate (``distance_adapt``).

  Attributes:
    params0: ``P`` the initial parameters ``x_0``.
    grad_sum: ``P`` ``s_t``, the weighted gradient sum.
    numerator: ``r_t``, the weighted sum of ``<g_k, x_0 - x_k>``.
    d: ``D_t``.
  """
  params0: Any
  grad_sum: Any
  numerator: jax.Array
  d: jax.Array


class GeneralState(NamedTuple):
  """Optimizer state (``P``: a pytree like the params; ``T``: one scalar per tensor).

  Attributes:
    count: int32 updates applied.
    m, v, m_slow: ``P`` gradient EMA, squared-gradient EMA, slow gradient EMA.
    log_lr: ``T`` log step size ``l_t``.
    hbar: ``T`` EMA of the per-tensor hypergradient cosine.
    hbar_global: scalar EMA of the global cosine.
    distance: ``DistanceState`` with ``distance_adapt``, else None.
  """
  count: jax.Array
  m: Any
  v: Any
  m_slow: Any
  log_lr: Any
  hbar: Any
  hbar_global: jax.Array
  distance: Optional[DistanceState] = None


def _kind_index(ndim: int) -> int:
  return 0 if ndim >= 2 else (1 if ndim == 1 else 2)


def _zero_last(layers):
  last = dict(layers[-1], w=jnp.zeros_like(layers[-1]["w"]))
  return tuple(layers[:-1]) + (last,)


def scale_by_general(config: GeneralConfig, theta, step_scales=None
                     ) -> optax.GradientTransformationExtraArgs:
  """The rule of the module docstring as an optax transformation.

  Args:
    config: ``GeneralConfig``.  theta: meta-parameters (may be traced).
    step_scales: optional pytree of Python floats like the params (μP multipliers).
  """
  b1, b2, eps = config.b1, config.b2, config.eps
  lo, hi = math.log(config.min_lr), math.log(config.max_lr)
  timescales = jnp.asarray(CONTROLLER_TIMESCALES, jnp.float32)

  def init_fn(params):
    zeros = lambda: jax.tree_util.tree_map(  # noqa: E731
        lambda p: jnp.zeros(jnp.shape(p), mlp_lib.compute_dtype(p)), params)
    per_tensor = lambda value: jax.tree_util.tree_map(  # noqa: E731
        lambda p: jnp.asarray(value, jnp.float32), params)
    distance = None
    if config.distance_adapt:
      distance = DistanceState(
          jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params),
          jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params),
          jnp.zeros((), jnp.float32), jnp.asarray(config.d0, jnp.float32))
    return GeneralState(jnp.zeros((), jnp.int32), zeros(), zeros(), zeros(),
                        per_tensor(theta["log_lr0"]), per_tensor(0.0),
                        jnp.zeros((), jnp.float32), distance)

  def update_fn(grads, state, params=None, **extra_args):
    del extra_args  # the rule reads gradients only (value= is optional for users)
    mlp_lib.check_params(params, "general")
    g_leaves, treedef = jax.tree_util.tree_flatten(grads)
    p_leaves = treedef.flatten_up_to(params)
    g_leaves = [jnp.asarray(g, mlp_lib.compute_dtype(p)) for g, p in zip(g_leaves, p_leaves)]
    m_old, v_old = treedef.flatten_up_to(state.m), treedef.flatten_up_to(state.v)
    ms_old = treedef.flatten_up_to(state.m_slow)
    l_old, hbar_old = treedef.flatten_up_to(state.log_lr), treedef.flatten_up_to(state.hbar)
    scales = ([1.0] * len(p_leaves) if step_scales is None
              else treedef.flatten_up_to(step_scales))
    t = optax.safe_increment(state.count)
    tf = t.astype(jnp.float32)

    # The moments average D-weighted gradients (weight 1 without distance_adapt), so
    # that steps taken while D was still tiny fade from them (Prodigy).
    distance, weight, weight_prev = None, 1.0, 1.0
    if config.distance_adapt:
      distance = _update_distance(config, state.distance, g_leaves, p_leaves, treedef, tf)
      weight, weight_prev = distance.d, state.distance.d

    def direction(m, v, count_f, w):
      mhat = m / (1.0 - b1 ** count_f)
      vhat = v / (1.0 - b2 ** count_f)
      return mhat / (jnp.sqrt(vhat) + w * eps)

    # Hypergradient cosines against the previous direction (zero at the first step).
    prev_f = jnp.maximum(tf - 1.0, 1.0)
    dots, gg, aa = [], [], []
    for g, m, v in zip(g_leaves, m_old, v_old):
      a_prev = direction(m, v, prev_f, weight_prev)
      dots.append(jnp.sum(g * a_prev))
      gg.append(jnp.sum(g * g))
      aa.append(jnp.sum(a_prev * a_prev))
    first = state.count == 0
    h = [jnp.where(first, 0.0, _cosine(d, x, y, eps)) for d, x, y in zip(dots, gg, aa)]
    h_global = jnp.where(first, 0.0, _cosine(sum(dots), sum(gg), sum(aa), eps))
    hbar = [0.9 * hb + 0.1 * hi_ for hb, hi_ in zip(hbar_old, h)]
    hbar_global = 0.9 * state.hbar_global + 0.1 * h_global

    time_feats = F.tanh_step_embedding(tf, timescales)
    rows = []
    for p, hi_, hb, log_lr in zip(p_leaves, h, hbar, l_old):
      kind = jax.nn.one_hot(_kind_index(jnp.ndim(p)), len(KINDS), dtype=jnp.float32)
      rows.append(jnp.concatenate([
          jnp.stack([hi_, hb, h_global, hbar_global,
                     log_lr - theta["log_lr0"]]).astype(jnp.float32),
          time_feats, kind]))
    c_out = mlp_lib.apply_mlp(theta["controller"], jnp.stack(rows))[:, 0]
    max_d = config.max_log_change
    new_l = [jnp.clip(log_lr + max_d * jnp.tanh((theta["gain"] * hb + c) / max_d), lo, hi)
             for log_lr, hb, c in zip(l_old, hbar, c_out)]

    new_m, new_v, new_ms, updates = [], [], [], []
    for g, p, m, v, ms, log_lr, s in zip(g_leaves, p_leaves, m_old, v_old, ms_old, new_l,
                                         scales):
      wg = weight * g
      m = b1 * m + (1.0 - b1) * wg
      v = b2 * v + (1.0 - b2) * wg * wg
      ms = config.slow_decay * ms + (1.0 - config.slow_decay) * wg
      a = direction(m, v, tf, weight)
      x = mlp_lib.as_vector_shape(g)
      cols = [x, mlp_lib.as_vector_shape(m), mlp_lib.as_vector_shape(ms),
              mlp_lib.as_vector_shape(a), mlp_lib.as_vector_shape(jnp.asarray(p, x.dtype))]
      (correction,) = mlp_lib.fused_mlp(theta["mlp"], F.normalize_columns(cols))
      d = a + config.mlp_scale * correction.reshape(jnp.shape(a))
      size = weight * jnp.exp(log_lr + theta["kind_log_scale"][_kind_index(jnp.ndim(p))]) * s
      updates.append((-size * d).astype(jnp.result_type(p)))
      new_m.append(m)
      new_v.append(v)
      new_ms.append(ms)

    unflat = treedef.unflatten
    return unflat(updates), GeneralState(t, unflat(new_m), unflat(new_v), unflat(new_ms),
                                         unflat(new_l), unflat(hbar), hbar_global, distance)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _cosine(dot, xx, yy, eps):
  """``dot / (sqrt(xx yy) + eps)``, the cosine from a dot product and squared norms;
  0 where it is not finite (a squared norm overflowed: ``inf * 0`` or ``inf / inf``),
  where optax.adam's update stays finite (tests/lopt/test_finite.py)."""
  c = dot / (jnp.sqrt(xx * yy) + eps)
  return jnp.where(jnp.isfinite(c), c, 0.0)


def _update_distance(config: GeneralConfig, state: DistanceState, g_leaves, p_leaves,
                     treedef, t: jax.Array) -> DistanceState:
  """One step of the distance estimate ``D_t`` (module docstring), in float32.

  A step whose sums overflow (``lam_t`` grows as ``D^2``, so a linear objective, whose
  D grows without bound, overflows them in a few dozen steps; a gradient of 1e30
  overflows ``<g, x_0 - x_t>``) leaves the estimate as it was: ``D_t`` stays a valid
  lower bound and every later step stays finite. Finite steps are unchanged."""
  b3 = math.sqrt(config.b2)
  debias = jnp.sqrt(1.0 - config.b2 ** t) / (1.0 - config.b1 ** t)
  lam = state.d / config.d0 * state.d * debias
  x0 = treedef.flatten_up_to(state.params0)
  s_old = treedef.flatten_up_to(state.grad_sum)
  g32 = [jnp.asarray(g, jnp.float32) for g in g_leaves]
  dot = sum(jnp.sum(g * (p0 - jnp.asarray(p, jnp.float32)))
            for g, p0, p in zip(g32, x0, p_leaves))
  numerator = b3 * state.numerator + lam * dot
  grad_sum = [b3 * s + lam * g for s, g in zip(s_old, g32)]
  l1 = sum(jnp.sum(jnp.abs(s)) for s in grad_sum)
  d = jnp.maximum(state.d, numerator / jnp.maximum(l1, 1e-30))
  new = DistanceState(state.params0, treedef.unflatten(grad_sum), numerator, d)
  ok = jnp.isfinite(numerator) & jnp.isfinite(l1) & jnp.isfinite(d)
  return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, state)


@register
class GeneralLOpt(LearnedOptimizer):
  """The general-purpose learned optimizer (module docstring)."""

  arch = "general"
  Config = GeneralConfig

  def init_meta_params(self, key):
    c = self.config
    k1, k2 = jax.random.split(key)
    return {
        "log_lr0": jnp.asarray(math.log(c.init_lr), jnp.float32),
        "gain": jnp.asarray(c.init_gain, jnp.float32),
        "kind_log_scale": jnp.zeros((len(KINDS),), jnp.float32),
        "controller": _zero_last(mlp_lib.init_mlp(
            k1, (NUM_CONTROLLER_INPUTS,) + tuple(c.controller_hidden) + (1,))),
        "mlp": _zero_last(mlp_lib.init_mlp(k2, (NUM_MLP_INPUTS,) + tuple(c.mlp_hidden) + (1,))),
    }

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    del num_steps  # horizon-free
    if not self.config.mup:
      return scale_by_general(self.config, theta)
    return scale_by_general(self.config, theta,
                            step_scales=mulo.step_multipliers(param_info, "general (mup=True)"))

  def flops_per_param(self) -> int:
    """Arithmetic per parameter per step: three EMAs, two Adam directions, the cosine
    reductions, five normalized columns and the per-parameter MLP."""
    sizes = (NUM_MLP_INPUTS,) + tuple(self.config.mlp_hidden) + (1,)
    distance = 6 if self.config.distance_adapt else 0  # <g, x0 - x>, s_t, |s_t|_1
    return mlp_lib.mlp_flops(sizes) + 9 + 2 * 6 + 6 + 3 * NUM_MLP_INPUTS + 4 + distance
