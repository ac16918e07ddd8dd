"""VeLO-style hypernetwork learned optimizer (``hypernet``).

Two levels, as in VeLO (Metz et al. 2022, learned_optimization's ``hyper_v2``):

1. A **per-tensor LSTM** (hidden 32 by default; VeLO used 512) with shared weights runs
   once per step on every parameter tensor. It reads named tensor statistics (log-RMS
   of the gradient, parameter and momenta, the mean Adam-normalized momenta, log-size),
   time features and loss features, and emits per tensor

   * mixing weights ``softmax(z_mix)`` over a bank of ``num_mlps`` tiny per-parameter
     MLPs (their weights are averaged with these weights: one MLP per tensor), and
   * a learning-rate multiplier ``lr_mult = exp(z_lr)``.

2. The **per-parameter MLP** (hidden 4) maps the per-parameter features (named in
   ``config.features``, see ``metaopt.lopt.features``; second-moment normalized per
   tensor) to a direction ``d`` and magnitude ``m``; the step is (ANCHORS.md)::

       update = -d * (RMS(param) + param_scale_eps) * exp(exp_mult * m) * step_mult * lr_mult

   ``param_scale_eps`` lets zero-initialized tensors (biases) move.

Time features always include a log-spaced step embedding ``tanh(step / s - 1)``
(horizon-free). With a known horizon (``num_steps``: the run's number of updates,
recorded in the state by ``init``, possibly traced: the contract of
``metaopt.lopt.base``) a fraction-of-training embedding and a flag are filled in too
(``features.fraction_features``); with an unknown one they are zero (same θ works in
both modes, and meta-training passes every inner run its horizon). Loss features
compare the current loss with its EMAs (``tanh((loss - ema) / |ema|)``) and carry a
"loss seen" flag; calls without ``value`` leave them (and the EMAs) at zero.

Speed (see benchmarks/RESULTS.md): the accumulators are stored feature-major (one
params-like tree per decay); every per-tensor mean the rule needs (column second
moments, LSTM statistics, RMS(param)) comes from one variadic reduction
(``fused_means``); the normalization is folded into the rows of the mixed first-layer
weights; and the tiny MLP is written as scalar-weighted sums of whole arrays, so XLA
emits one elementwise loop per tensor instead of ``(n, F) @ (F, 4)`` matmuls with tiny
minor dimensions (about 100x slower on CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import features as F
from metaopt.lopt import lstm as lstm_lib
from metaopt.lopt.base import LearnedOptimizer, horizon_value, register
from tasks.registry import unknown_name_message

_LOG_EPS = 1e-8


@jax.custom_jvp
def fused_means(xs):
  """``[mean(x) for x in xs]`` (arrays of one shape) as one variadic reduction.

  XLA fuses the computation of every ``x`` into a single pass over the tensor, where
  separate means would be separate passes. Differentiable (the mean is linear).
  """
  if not xs:
    return []
  sums = jax.lax.reduce(tuple(xs), tuple(jnp.zeros((), x.dtype) for x in xs),
                        lambda a, b: tuple(u + v for u, v in zip(a, b)),
                        tuple(range(xs[0].ndim)))
  return [s / xs[0].size for s in sums]


@fused_means.defjvp
def _fused_means_jvp(primals, tangents):
  (xs,), (dxs,) = primals, tangents
  return fused_means(xs), [jnp.mean(dx) for dx in dxs]


@dataclasses.dataclass(frozen=True)
class TensorStat:
  """A per-tensor LSTM input built from means over the tensor.

  Attributes:
    quantities: ``tensor -> [S-shaped arrays]`` whose means the statistic needs
      (``tensor`` holds ``grad``, ``param`` of shape S and ``momenta`` / ``rms``:
      lists of S-shaped EMAs, one per decay).
    finalize: ``(tensor, means) -> (k,)``.
  """
  quantities: Callable[[Dict[str, Any]], List[jax.Array]]
  finalize: Callable[[Dict[str, Any], List[jax.Array]], jax.Array]


def safe_sqrt(x):
  """``sqrt`` with a finite gradient at 0 (zero-initialized tensors would otherwise
  give ``inf * 0 = NaN`` meta-gradients)."""
  return jnp.sqrt(jnp.maximum(x, 1e-30))


def _log_rms(means):
  """``0.1 log(sqrt(mean) + eps)`` per mean of squares; an overflowed mean (inf, from
  gradients above ~1e19) is clipped to the dtype's largest value (the LSTM would read
  inf and give NaN)."""
  return jnp.stack([0.1 * jnp.log(safe_sqrt(jnp.minimum(m, jnp.finfo(m.dtype).max)) + _LOG_EPS)
                    for m in means])


#: Per-tensor statistics read by the LSTM, by name.
TENSOR_STATS: Dict[str, TensorStat] = {
    "log_rms_grad": TensorStat(lambda t: [jnp.square(t["grad"])], lambda t, m: _log_rms(m)),
    "log_rms_param": TensorStat(lambda t: [jnp.square(t["param"])], lambda t, m: _log_rms(m)),
    "log_rms_momenta": TensorStat(lambda t: [jnp.square(m) for m in t["momenta"]],
                                  lambda t, m: _log_rms(m)),
    # Mean of m / sqrt(v): near +-1 when the gradient sign is consistent, near 0 when noisy.
    "mean_momenta_rsqrt_rms": TensorStat(
        lambda t: [m * jax.lax.rsqrt(t["rms"][0] + F.RSQRT_EPS) for m in t["momenta"]],
        lambda t, m: jnp.stack(m)),
    "log_size": TensorStat(
        lambda t: [],
        lambda t, m: 0.1 * jnp.log(jnp.asarray(t["param"].size, t["param"].dtype))[None]),
}

#: Centers of the fraction-of-training embedding (``features.fraction_features``).
FRACTION_CENTERS = F.FRACTION_CENTERS


class HypernetState(NamedTuple):
  """Optimizer state.

  Attributes:
    count: int32 scalar, updates applied so far.
    momenta: tuple over ``momentum_decays`` of params-like gradient EMAs.
    rms: tuple over ``rms_decays`` of params-like squared-gradient EMAs.
    lstm: per-tensor LSTM state, ``(h, c)`` per layer, each ``(num_tensors, hidden)``.
    loss_ema: ``(L,)`` EMAs of the loss (zero until a ``value`` is seen).
    loss_seen: float scalar, 1 once an update received ``value``.
    horizon: int32 scalar, the run's number of updates (0: unknown), set by ``init``.
  """
  count: jax.Array
  momenta: Any
  rms: Any
  lstm: Any
  loss_ema: jax.Array
  loss_seen: jax.Array
  horizon: jax.Array


@register
class Hypernet(LearnedOptimizer):
  """Per-tensor LSTM emitting per-parameter MLP weights and lr multipliers (VeLO-style)."""

  arch = "hypernet"

  @dataclasses.dataclass(frozen=True)
  class Config:
    """Attributes:
      lstm_hidden: hidden size of the per-tensor LSTM (VeLO: 512).
      lstm_layers: stacked LSTM layers.
      num_mlps: size of the bank of per-parameter MLPs mixed per tensor.
      mlp_hidden: hidden width of the per-parameter MLP.
      momentum_decays: decays of the gradient EMAs.
      rms_decays: decays of the squared-gradient EMAs.
      features: per-parameter features (names in ``metaopt.lopt.features.FEATURES``).
      tensor_stats: per-tensor LSTM inputs (names in ``TENSOR_STATS``).
      timescales: step-embedding timescales (horizon-free time features).
      loss_decays: decays of the loss EMAs (loss features).
      exp_mult, step_mult: step = d * exp(exp_mult * m) * step_mult * ...
      param_scale_eps: added to RMS(param) in the step scale.
      readout_init_scale: std of the initial LSTM-to-head weights.
    """
    lstm_hidden: int = 32
    lstm_layers: int = 1
    num_mlps: int = 8
    mlp_hidden: int = 4
    momentum_decays: Tuple[float, ...] = (0.9, 0.99, 0.999)
    rms_decays: Tuple[float, ...] = (0.999,)
    features: Tuple[str, ...] = ("grad", "param", "momenta", "rsqrt_rms", "momenta_rsqrt_rms")
    tensor_stats: Tuple[str, ...] = ("log_rms_grad", "log_rms_param", "log_rms_momenta",
                                     "mean_momenta_rsqrt_rms", "log_size")
    timescales: Tuple[float, ...] = (1, 10, 100, 1000, 10000, 100000)
    loss_decays: Tuple[float, ...] = (0.9, 0.99)
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    param_scale_eps: float = 1e-2
    readout_init_scale: float = 0.01

    def __post_init__(self):
      for name, known in (("features", F.FEATURES), ("tensor_stats", TENSOR_STATS)):
        names = getattr(self, name)
        if isinstance(names, str):
          raise TypeError(f"hypernet: {name} must be a tuple of names, got the string "
                          f"{names!r}; write ({names!r},).")
        for n in names:
          if n not in known:
            raise ValueError(f"hypernet: {unknown_name_message(f'{name} entry', n, known)}")
      if all(F.FEATURES[n].per_tensor for n in self.features):
        raise ValueError("hypernet: features need at least one per-element feature "
                         f"(got only per-tensor ones: {self.features}).")
      if not self.momentum_decays or not self.rms_decays:
        raise ValueError("hypernet: momentum_decays and rms_decays must be non-empty.")
      for name in ("lstm_hidden", "lstm_layers", "num_mlps", "mlp_hidden"):
        if getattr(self, name) < 1:
          raise ValueError(f"hypernet: {name} must be >= 1, got {getattr(self, name)}.")

  # ---- input layout (derived from the config's name lists) ------------------------

  def _feature_list(self):
    feats = F.get(self.config.features)
    F.check_context(feats, self._example_context())
    return feats

  def _context(self, grad, param, momenta, rms, step, horizon):
    shape = param.shape if param.ndim else (1,)
    return {"grad": grad.reshape(shape), "param": param.reshape(shape),
            "momenta": momenta.reshape(shape + momenta.shape[-1:]),
            "rms": rms.reshape(shape + rms.shape[-1:]), "step": step, "horizon": horizon,
            "timescales": jnp.asarray(self.config.timescales, jnp.float32)}

  def _example_context(self):
    c = self.config
    z = jnp.zeros((2,), jnp.float32)
    return self._context(z, z, jnp.zeros((2, len(c.momentum_decays))),
                         jnp.zeros((2, len(c.rms_decays))), jnp.zeros((), jnp.int32),
                         jnp.zeros((), jnp.int32))

  @property
  def num_inputs(self) -> int:
    """Per-parameter MLP input width, derived from ``config.features``."""
    return F.num_inputs(self._feature_list(), self._example_context)

  def _global_features(self, step, horizon, loss_feats, loss_seen):
    """Time and loss features shared by all tensors: ``(G,)`` in ``loss_feats.dtype``.

    ``horizon``: the run's number of updates as stored in the state (an int32 scalar,
    0 when unknown); ``None`` or a Python int are accepted too (``horizon_value``)."""
    c = self.config
    dtype = loss_feats.dtype
    step_f = step.astype(dtype)
    log_step = F.tanh_step_embedding(step_f, jnp.asarray(c.timescales, dtype))
    frac_feats = F.fraction_features(step, horizon_value(horizon), dtype, FRACTION_CENTERS)
    return jnp.concatenate([log_step, frac_feats, loss_feats, loss_seen[None]])

  def _stat_quantities(self, tensor) -> List[jax.Array]:
    """Every array whose mean some configured tensor statistic needs, in order."""
    return [q for n in self.config.tensor_stats for q in TENSOR_STATS[n].quantities(tensor)]

  def _lstm_inputs(self, tensor, global_feats, means=None):
    """LSTM input of one tensor: its statistics then the global features.

    ``means``: the means of ``_stat_quantities(tensor)`` when already computed (the
    update computes them in its single reduction pass).
    """
    if means is None:
      means = fused_means(self._stat_quantities(tensor))
    stats, i = [], 0
    for n in self.config.tensor_stats:
      k = len(TENSOR_STATS[n].quantities(tensor))
      stats.append(TENSOR_STATS[n].finalize(tensor, means[i:i + k]))
      i += k
    return jnp.concatenate([s.astype(global_feats.dtype) for s in stats] + [global_feats])

  @property
  def lstm_input_size(self) -> int:
    """Per-tensor LSTM input width, derived from the name lists by shape inference."""
    c = self.config

    def example():
      g = self._global_features(jnp.zeros((), jnp.int32), 10, jnp.zeros(len(c.loss_decays)),
                                jnp.zeros(()))
      z = jnp.zeros((2,), jnp.float32)
      tensor = {"grad": z, "param": z, "momenta": [z] * len(c.momentum_decays),
                "rms": [z] * len(c.rms_decays)}
      return self._lstm_inputs(tensor, g)

    return int(jax.eval_shape(example).shape[0])

  # ---- meta-parameters -------------------------------------------------------------

  def init_meta_params(self, key):
    """θ = {"lstm": LSTM layers, "heads": {"w_mix": (H, K), "b_mix": (K,), "w_lr": (H,),
    "b_lr": ()}, "bank": {"w1": (K, F, h), "b1": (K, h), "w2": (K, h, 2), "b2": (K, 2)}}."""
    # One compiled program instead of one per eager random op.
    return jax.jit(self._init_meta_params)(key)

  def _init_meta_params(self, key):
    c = self.config
    k_lstm, k_mix, k_lr, k1, k2 = jax.random.split(key, 5)
    n_in, k_bank, hid = self.num_inputs, c.num_mlps, c.mlp_hidden
    s = c.readout_init_scale
    return {
        "lstm": lstm_lib.init_lstm(k_lstm, self.lstm_input_size, c.lstm_hidden, c.lstm_layers),
        "heads": {
            "w_mix": s * jax.random.normal(k_mix, (c.lstm_hidden, k_bank), jnp.float32),
            "b_mix": jnp.zeros((k_bank,), jnp.float32),
            "w_lr": s * jax.random.normal(k_lr, (c.lstm_hidden,), jnp.float32),
            "b_lr": jnp.zeros((), jnp.float32),
        },
        "bank": {
            "w1": jax.random.normal(k1, (k_bank, n_in, hid), jnp.float32) / jnp.sqrt(n_in),
            "b1": jnp.zeros((k_bank, hid), jnp.float32),
            "w2": jax.random.normal(k2, (k_bank, hid, 2), jnp.float32) / jnp.sqrt(hid),
            "b2": jnp.zeros((k_bank, 2), jnp.float32),
        },
    }

  # ---- the rule --------------------------------------------------------------------

  def transform(self, theta, *, num_steps: Any = None, param_info: Any = None):
    """The learned rule. ``num_steps`` (the run's number of updates; int, traced int
    scalar or None = unknown) is recorded by ``init`` and fills the fraction-of-training
    features; ``update`` reads it from the state. ``param_info`` is not used."""
    del param_info
    c = self.config
    feats = self._feature_list()
    try:
      horizon = horizon_value(num_steps)
    except ValueError as e:
      raise ValueError(f"hypernet: {e}") from None

    def init_fn(params):
      leaves = jax.tree_util.tree_leaves(params)
      # Per-tensor state in the params' compute dtype (float64 in x64 gradient checks).
      dtype = lstm_lib.compute_dtype(leaves[0]) if leaves else jnp.float32

      def acc(n):
        # One params-like tree per decay: each accumulator is contiguous (feature-major),
        # which keeps the per-element math one vectorized loop.
        return tuple(jax.tree_util.tree_map(
            lambda p: jnp.zeros(jnp.shape(p), lstm_lib.compute_dtype(p)), params)
                     for _ in range(n))

      return HypernetState(
          count=jnp.zeros((), jnp.int32), momenta=acc(len(c.momentum_decays)),
          rms=acc(len(c.rms_decays)),
          lstm=lstm_lib.zero_lstm_state((len(leaves),), c.lstm_hidden, c.lstm_layers, dtype),
          loss_ema=jnp.zeros((len(c.loss_decays),), dtype),
          loss_seen=jnp.zeros((), dtype), horizon=horizon)

    def update_fn(grads, state, params=None, value=None, **extra_args):
      del extra_args
      if params is None:
        raise ValueError("hypernet reads parameter values: call update(grads, state, params).")
      g_leaves, treedef = jax.tree_util.tree_flatten(grads)
      p_leaves = treedef.flatten_up_to(params)
      g32 = [g.astype(lstm_lib.compute_dtype(g)) for g in g_leaves]
      # momenta[j][i]: EMA at decay j of leaf i.
      momenta = [[d * m + (1.0 - d) * g for m, g in zip(treedef.flatten_up_to(tree), g32)]
                 for d, tree in zip(c.momentum_decays, state.momenta)]
      rms = [[d * v + (1.0 - d) * jnp.square(g) for v, g in zip(treedef.flatten_up_to(tree), g32)]
             for d, tree in zip(c.rms_decays, state.rms)]

      # Loss features read the EMAs *before* this loss enters them.
      if value is None:
        loss_feats = jnp.zeros_like(state.loss_ema)
        loss_ema, loss_seen = state.loss_ema, state.loss_seen
      else:
        loss = jnp.asarray(value, state.loss_ema.dtype)
        prev = jnp.where(state.loss_seen > 0, state.loss_ema, loss)
        loss_feats = jnp.tanh((loss - prev) / (jnp.abs(prev) + _LOG_EPS))
        decays = jnp.asarray(c.loss_decays, loss.dtype)
        loss_ema = decays * prev + (1.0 - decays) * loss
        loss_seen = jnp.ones_like(state.loss_seen)
      global_feats = self._global_features(state.count, state.horizon, loss_feats, loss_seen)

      tensors = [{"grad": g.reshape(g.shape or (1,)),
                  "param": p.astype(g.dtype).reshape(g.shape or (1,)),
                  "momenta": [m[i].reshape(g.shape or (1,)) for m in momenta],
                  "rms": [v[i].reshape(g.shape or (1,)) for v in rms]}
                 for i, (g, p) in enumerate(zip(g32, p_leaves))]
      # One reduction pass per tensor gives every mean the rule needs: the column
      # second moments, the LSTM's tensor statistics and RMS(param).
      columns, lstm_in, col_scales, param_rms = [], [], [], []
      for t in tensors:
        normed, raw, per_tensor = self._columns(feats, t, state.count, state.horizon)
        stat_q = self._stat_quantities(t)
        means = fused_means([jnp.square(x) for x in normed] + stat_q + [jnp.square(t["param"])])
        n = len(normed)
        columns.append((normed + raw, per_tensor))
        col_scales.append(jnp.stack([jax.lax.rsqrt(F.NORM_EPS + m) for m in means[:n]]
                                    + [jnp.ones((), g32[0].dtype)] * len(raw)))
        lstm_in.append(self._lstm_inputs(t, global_feats, means[n:n + len(stat_q)]))
        param_rms.append(safe_sqrt(means[-1]))
      h, lstm_state = lstm_lib.lstm_apply(theta["lstm"], jnp.stack(lstm_in), state.lstm)
      heads = theta["heads"]
      mix = jax.nn.softmax(h @ heads["w_mix"] + heads["b_mix"], axis=-1)   # (T, K)
      lr_mult = jnp.exp(h @ heads["w_lr"] + heads["b_lr"])                 # (T,)
      bank = theta["bank"]
      w1 = jnp.einsum("tk,kfh->tfh", mix, bank["w1"])
      b1 = mix @ bank["b1"]
      w2 = jnp.einsum("tk,kho->tho", mix, bank["w2"])
      b2 = mix @ bank["b2"]

      updates = []
      for i, p in enumerate(p_leaves):
        cols, per_tensor = columns[i]
        n_elem = len(cols)
        # The per-tensor normalization is folded into the first layer's rows (same as
        # normalizing the inputs, as features.build_inputs does, without writing them);
        # per-tensor features are constant over the tensor: they shift the bias.
        w1_i = w1[i, :n_elem] * col_scales[i].astype(w1.dtype)[:, None]
        b1_i = b1[i]
        if per_tensor:
          b1_i = b1_i + jnp.concatenate(per_tensor, -1).astype(w1.dtype) @ w1[i, n_elem:]
        direction, magnitude = _tiny_mlp(cols, w1_i, b1_i, w2[i], b2[i])
        scale = param_rms[i] + c.param_scale_eps
        step = direction * jnp.exp(c.exp_mult * magnitude) * (c.step_mult * scale * lr_mult[i])
        updates.append((-step).reshape(jnp.shape(p)).astype(jnp.asarray(p).dtype))

      new_state = HypernetState(
          count=optax.safe_increment(state.count),
          momenta=tuple(treedef.unflatten(m) for m in momenta),
          rms=tuple(treedef.unflatten(v) for v in rms),
          lstm=lstm_state, loss_ema=loss_ema, loss_seen=loss_seen, horizon=state.horizon)
      return treedef.unflatten(updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

  def _columns(self, feats, tensor, step, horizon):
    """Per-element input columns of one tensor (each of its shape S), unnormalized.

    Features reading ``momenta`` are evaluated once per decay on an ``S + (1,)``
    momentum (same columns, same order as on the stacked ``S + (M,)`` array), so no
    stacked copy of the accumulators is made. Column order matches
    ``features.build_inputs``: normalized, raw, per-tensor.

    Returns ``(normalized columns, raw columns, per-tensor feature vectors)``.
    """
    base = {"grad": tensor["grad"], "param": tensor["param"],
            "rms": jnp.stack(tensor["rms"], axis=-1), "step": step, "horizon": horizon,
            "timescales": jnp.asarray(self.config.timescales, jnp.float32)}
    normed, raw, per_tensor = [], [], []
    for f in feats:
      if "momenta" in f.needs:
        vals = [f.fn({**base, "momenta": m[..., None]}) for m in tensor["momenta"]]
      else:
        vals = [f.fn(base)]
      if f.per_tensor:
        per_tensor.extend(vals)
      else:
        cols = [v[..., k] for v in vals for k in range(v.shape[-1])]
        (normed if f.normalize else raw).extend(cols)
    return normed, raw, per_tensor


def _tiny_mlp(columns, w1, b1, w2, b2):
  """ReLU MLP with one hidden layer on per-element columns: ``sum_f col_f * w1[f, j]``.

  Written as scalar-weighted sums of whole arrays rather than a ``(n, F) @ (F, h)``
  matmul: with F ~ 10 and h = 4 a matmul has tiny minor dimensions that vectorize
  poorly on CPU, while the sums fuse with the feature math into one elementwise loop.

  Args:
    columns: F arrays of one shape S.  w1: (F, h).  b1: (h,).  w2: (h, o).  b2: (o,).
  Returns:
    o arrays of shape S.
  """
  hidden = []
  for j in range(w1.shape[1]):
    acc = b1[j] + columns[0] * w1[0, j]
    for f in range(1, len(columns)):
      acc = acc + columns[f] * w1[f, j]
    hidden.append(jax.nn.relu(acc))
  outs = []
  for o in range(w2.shape[1]):
    acc = b2[o] + hidden[0] * w2[0, o]
    for j in range(1, len(hidden)):
      acc = acc + hidden[j] * w2[j, o]
    outs.append(acc)
  return outs
