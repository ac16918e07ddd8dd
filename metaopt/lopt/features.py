"""Per-parameter input features of learned optimizers, declared as data.

A learned optimizer names the features it reads (``config.features``, a tuple of
names); ``get(names)`` turns them into ``Feature`` objects and ``build_inputs`` stacks
them into one ``(num_elements, num_inputs)`` matrix per tensor. The input size is
derived from that list by shape inference (``num_inputs``), never counted by hand.

Each feature reads a *context*: a dict describing one parameter tensor of shape
``S`` (scalars are promoted to shape ``(1,)``). The architecture fills it from its
optimizer state; the keys a feature needs are listed in ``Feature.needs``:

* ``grad``: ``S`` gradient;  ``param``: ``S`` current parameter value;
* ``momenta``: ``S + (M,)`` EMAs of the gradient (one per decay);
* ``rms``: ``S + (R,)`` EMAs of the squared gradient;
* ``factored``: ``S + (K,)`` Adafactor reconstruction ``row * col / mean(row)`` of the
  squared-gradient EMAs (``K`` decays), or the full EMA for vectors;
* ``step``: scalar int32 iteration;  ``timescales``: ``(T,)`` float32;
* ``horizon``: scalar int32, the run's total number of updates, 0 when unknown
  (``metaopt.lopt.base.horizon_value``; the horizon contract is in ``base``).

Features marked ``normalize=True`` are rescaled per tensor to unit second moment
(``second_moment_normalize``), as in learned_optimization's MLPLOpt; per-tensor
features (one value per tensor such as the step embedding) are neither normalized
nor stored per element: they are broadcast after normalization.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

from tasks.registry import UnknownNameError, unknown_name_message

Context = Mapping[str, jax.Array]

#: Added under rsqrt so that a zero second moment gives a large finite feature.
RSQRT_EPS = 1e-8
#: Added to the per-tensor second moment before normalizing (learned_optimization: 1e-5).
NORM_EPS = 1e-5

#: Step-embedding timescales of small_fc (learned_optimization ``_tanh_embedding``).
DEFAULT_TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)


@dataclasses.dataclass(frozen=True)
class Feature:
  """One named input of a per-parameter network.

  Attributes:
    name: registry name used in configs.
    fn: ``context -> array``. Per-element features return ``S + (k,)``; per-tensor
      features return ``(k,)``.
    needs: context keys read by ``fn`` (checked with a clear error).
    per_tensor: one value per tensor, broadcast to every element.
    normalize: second-moment normalize per tensor (per-element features only).
  """
  name: str
  fn: Callable[[Context], jax.Array]
  needs: Tuple[str, ...]
  per_tensor: bool = False
  normalize: bool = True


def second_moment_normalize(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """``x / sqrt(eps + mean(x**2))`` with the mean over every axis but the last.

  Args:
    x: ``S + (k,)`` features of one tensor.
  Returns:
    Same shape; each of the ``k`` columns has (about) unit second moment.
  """
  axes = tuple(range(x.ndim - 1))
  return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def tanh_step_embedding(step: jax.Array, timescales: jax.Array) -> jax.Array:
  """``tanh(step / timescale - 1)`` per timescale: ``(T,)``, in (-1, 1)."""
  return jnp.tanh(step / timescales - 1.0)


#: Centers of the fraction-of-training embedding ``tanh(10 (frac - center))``.
FRACTION_CENTERS = (0.1, 0.3, 0.5, 0.7, 0.9)


def fraction_features(step: jax.Array, horizon: jax.Array, dtype=jnp.float32,
                      centers=FRACTION_CENTERS) -> jax.Array:
  """Fraction-of-training features ``[frac, known, tanh(10 (frac - c)) for c in centers]``.

  ``frac = min(step / horizon, 1)``; ``known`` is 1 when the horizon is known. With an
  unknown horizon (``horizon <= 0``, ``base.UNKNOWN_HORIZON``) every entry is 0: the
  one "unknown" value, the same in meta-training and at evaluation.

  Args:
    step: int scalar, updates applied so far.  horizon: int scalar (may be traced).
  Returns:
    ``(2 + len(centers),)`` in ``dtype``.
  """
  known = horizon > 0
  step_f = jnp.asarray(step).astype(dtype)
  safe = jnp.where(known, horizon, 1).astype(dtype)
  frac = jnp.minimum(step_f / safe, 1.0)
  embed = jnp.tanh(10.0 * (frac - jnp.asarray(centers, dtype)))
  feats = jnp.concatenate([jnp.stack([frac, jnp.ones((), dtype)]), embed])
  return jnp.where(known, feats, jnp.zeros_like(feats))


def ema(acc: jax.Array, x: jax.Array, decays: jax.Array) -> jax.Array:
  """One step of exponential moving averages at several decays.

  Args:
    acc: ``S + (D,)`` accumulators.  x: ``S`` new value.  decays: ``(D,)``.
  Returns:
    ``decays * acc + (1 - decays) * x[..., None]``.
  """
  return decays * acc + (1.0 - decays) * x[..., None]


def rsqrt(v):
  """``1 / sqrt(v + RSQRT_EPS)`` elementwise: the preconditioner of a second moment."""
  return jax.lax.rsqrt(v + RSQRT_EPS)


def _outer_last(a, b):
  """``S + (A,)`` and ``S + (B,)`` -> ``S + (A*B,)`` of all products (a-major)."""
  # A concatenate, not a reshape of an outer product: XLA fuses it with its consumers.
  return jnp.concatenate([a[..., i:i + 1] * b for i in range(a.shape[-1])], axis=-1)


@jax.custom_jvp
def sums_of_squares(cols):
  """``[sum(c**2) for c in cols]`` as one variadic reduction: XLA fuses the column
  computations into a single pass over the tensor (separate sums are separate passes)."""
  return list(jax.lax.reduce(tuple(jnp.square(c) for c in cols),
                             tuple(jnp.zeros((), c.dtype) for c in cols),
                             lambda xs, ys: tuple(x + y for x, y in zip(xs, ys)),
                             tuple(range(cols[0].ndim))))


@sums_of_squares.defjvp
def _sums_of_squares_jvp(primals, tangents):
  (cols,), (dcols,) = primals, tangents
  return (sums_of_squares(cols),
          [2.0 * jnp.sum(c * dc) for c, dc in zip(cols, dcols)])


_FEATURE_LIST = (
    Feature("grad", lambda c: c["grad"][..., None], ("grad",)),
    Feature("param", lambda c: c["param"][..., None], ("param",)),
    Feature("momenta", lambda c: c["momenta"], ("momenta",)),
    # Adam-like preconditioner and its product with each momentum.
    Feature("rsqrt_rms", lambda c: rsqrt(c["rms"]), ("rms",)),
    Feature("momenta_rsqrt_rms", lambda c: _outer_last(c["momenta"], rsqrt(c["rms"])),
            ("momenta", "rms")),
    Feature("grad_rsqrt_rms", lambda c: _outer_last(c["grad"][..., None], rsqrt(c["rms"])),
            ("grad", "rms")),
    # Adafactor features (AdafacMLPLOpt): factored preconditioner, its product with
    # the gradient and with each momentum.
    Feature("rsqrt_factored", lambda c: rsqrt(c["factored"]), ("factored",)),
    Feature("grad_rsqrt_factored",
            lambda c: _outer_last(c["grad"][..., None], rsqrt(c["factored"])),
            ("grad", "factored")),
    Feature("momenta_rsqrt_factored",
            lambda c: _outer_last(c["momenta"], rsqrt(c["factored"])),
            ("momenta", "factored")),
    Feature("time", lambda c: tanh_step_embedding(c["step"], c["timescales"]),
            ("step", "timescales"), per_tensor=True, normalize=False),
    Feature("fraction", lambda c: fraction_features(c["step"], c["horizon"]),
            ("step", "horizon"), per_tensor=True, normalize=False),
)

#: All known features by name.
FEATURES: Dict[str, Feature] = {f.name: f for f in _FEATURE_LIST}


def get(names: Sequence[str]) -> Tuple[Feature, ...]:
  """Features by name, in order; unknown names raise with the known ones listed."""
  if isinstance(names, str):
    raise TypeError(f"Expected a sequence of feature names, got the string {names!r}; "
                    f"write ({names!r},).")
  out = []
  for name in names:
    if name not in FEATURES:
      raise UnknownNameError(unknown_name_message("feature", name, FEATURES))
    out.append(FEATURES[name])
  if len(set(names)) != len(names):
    raise ValueError(f"Duplicate feature names in {tuple(names)}.")
  return tuple(out)


def register(feature: Feature) -> Feature:
  """Adds a feature to ``FEATURES`` (other architectures may declare their own)."""
  if feature.name in FEATURES and FEATURES[feature.name] is not feature:
    raise ValueError(f"Feature {feature.name!r} registered twice.")
  FEATURES[feature.name] = feature
  return feature


def check_context(features: Sequence[Feature], context: Context) -> None:
  """Raises if ``context`` lacks a key some feature needs (names both)."""
  for f in features:
    missing = [k for k in f.needs if k not in context]
    if missing:
      raise ValueError(f"Feature {f.name!r} needs context key(s) {missing}, which this "
                       f"architecture does not provide (it provides {sorted(context)}). "
                       f"Remove {f.name!r} from config.features or use another architecture.")


def column_order(features: Sequence[Feature]) -> Tuple[Feature, ...]:
  """Column order: normalized per-element, unnormalized per-element, per-tensor."""
  return (tuple(f for f in features if not f.per_tensor and f.normalize) +
          tuple(f for f in features if not f.per_tensor and not f.normalize) +
          tuple(f for f in features if f.per_tensor))


def build_columns(features: Sequence[Feature], context: Context):
  """The inputs of one tensor as a list of columns (order of ``columns``).

  Per-element columns have the tensor's shape ``S`` (normalized ones are already
  divided by their per-tensor RMS); per-tensor columns are scalars. Keeping columns
  separate lets XLA fuse feature computation and a small per-parameter MLP into one
  pass over memory (``mlp.apply_mlp_columns``).
  """
  cols, normalize = [], []
  for f in column_order(features):
    val = f.fn(context)
    for i in range(val.shape[-1]):
      cols.append(val[..., i])
      normalize.append(f.normalize and not f.per_tensor)
  idx = [i for i, n in enumerate(normalize) if n]
  if idx:
    for i, c in zip(idx, normalize_columns([cols[i] for i in idx])):
      cols[i] = c
  return cols


def normalize_columns(cols):
  """Each column (arrays of one tensor's shape ``S``) divided by its RMS over the
  tensor, ``c / sqrt(NORM_EPS + mean(c**2))``, in one fused pass (``sums_of_squares``)."""
  size = cols[0].size
  return [c * jax.lax.rsqrt(NORM_EPS + sq / size) for c, sq in zip(cols, sums_of_squares(cols))]


def split_inputs(features: Sequence[Feature], context: Context):
  """The inputs of one tensor, unnormalized, for a matmul with folded scales.

  ``build_inputs(...) == concat([x * scales, broadcast(per_tensor)], -1)``; a caller
  multiplying by a first-layer matrix ``w`` can instead use
  ``x @ (scales[:, None] * w[:k]) + per_tensor @ w[k:]`` and skip the
  normalization pass and the broadcast per-tensor columns.

  Returns:
    x: ``(prod(S), k)`` per-element features (normalized ones first, as ``columns``).
    scales: ``(k,)`` per-column normalization factors (1 for unnormalized columns).
    per_tensor: ``(T,)`` per-tensor features.
  """
  shape = context["param"].shape
  ordered = column_order(features)
  vals = [(f, f.fn(context)) for f in ordered if not f.per_tensor]
  x = jnp.concatenate([v for _, v in vals], axis=-1).reshape(-1, sum(v.shape[-1] for _, v in vals))
  normed_cols = [v[..., i] for f, v in vals if f.normalize for i in range(v.shape[-1])]
  size = 1
  for d in shape:
    size *= d
  scales = []
  if normed_cols:
    sums = sums_of_squares(normed_cols)
    scales = [jax.lax.rsqrt(NORM_EPS + s / size) for s in sums]
  n_raw = x.shape[-1] - len(scales)
  scales = jnp.stack(scales + [jnp.ones((), x.dtype)] * n_raw)
  per = [f.fn(context) for f in ordered if f.per_tensor]
  per_tensor = jnp.concatenate(per, axis=-1) if per else jnp.zeros((0,), x.dtype)
  return x, scales, per_tensor


def build_inputs(features: Sequence[Feature], context: Context) -> jax.Array:
  """Stacks the features of one tensor into the per-parameter network's input.

  Normalized features are second-moment normalized per tensor and per column
  (``second_moment_normalize``); per-tensor features are broadcast.

  Args:
    features: from ``get``.
    context: see the module docstring; ``context["param"]`` has shape ``S``.
  Returns:
    ``(prod(S), num_inputs)`` matrix (dtype of the context), rows in C order,
    columns in the order given by ``columns``.
  """
  shape = context["param"].shape
  cols = [jnp.broadcast_to(c, shape) for c in build_columns(features, context)]
  return jnp.stack(cols, axis=-1).reshape(-1, len(cols))


def columns(features: Sequence[Feature], context_fn: Callable[[], Context]) -> Dict[str, slice]:
  """Which input columns each feature occupies in ``build_inputs``' output.

  The order is: normalized per-element features (in list order), unnormalized
  per-element features, then per-tensor features.
  """
  widths = {f.name: int(jax.eval_shape(lambda f=f: f.fn(context_fn())).shape[-1])
            for f in features}
  out, start = {}, 0
  for f in column_order(features):
    out[f.name] = slice(start, start + widths[f.name])
    start += widths[f.name]
  return out


def num_inputs(features: Sequence[Feature], context_fn: Callable[[], Context]) -> int:
  """Input width, derived by shape inference from the feature list.

  Args:
    features: from ``get``.
    context_fn: zero-argument function returning an example context (any tensor
      shape); it is only traced, never run.
  """
  out = jax.eval_shape(lambda: build_inputs(features, context_fn()))
  return int(out.shape[-1])
