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
* ``step``: scalar int32 iteration;  ``timescales``: ``(T,)`` float32.

Features marked ``normalize=True`` are rescaled per tensor to unit second moment
(``second_moment_normalize``), as in learned_optimization's MLPLOpt; per-tensor
features (one value per tensor such as the step embedding) are neither normalized
nor stored per element: they are broadcast after normalization.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

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


def ema(acc: jax.Array, x: jax.Array, decays: jax.Array) -> jax.Array:
  """One step of exponential moving averages at several decays.

  Args:
    acc: ``S + (D,)`` accumulators.  x: ``S`` new value.  decays: ``(D,)``.
  Returns:
    ``decays * acc + (1 - decays) * x[..., None]``.
  """
  return decays * acc + (1.0 - decays) * x[..., None]


def _rsqrt(v):
  return jax.lax.rsqrt(v + RSQRT_EPS)


def _outer_last(a, b):
  """``S + (A,)`` and ``S + (B,)`` -> ``S + (A*B,)`` of all products."""
  prod = a[..., :, None] * b[..., None, :]
  return prod.reshape(prod.shape[:-2] + (-1,))


_FEATURE_LIST = (
    Feature("grad", lambda c: c["grad"][..., None], ("grad",)),
    Feature("param", lambda c: c["param"][..., None], ("param",)),
    Feature("momenta", lambda c: c["momenta"], ("momenta",)),
    # Adam-like preconditioner and its product with each momentum.
    Feature("rsqrt_rms", lambda c: _rsqrt(c["rms"]), ("rms",)),
    Feature("momenta_rsqrt_rms", lambda c: _outer_last(c["momenta"], _rsqrt(c["rms"])),
            ("momenta", "rms")),
    Feature("grad_rsqrt_rms", lambda c: _outer_last(c["grad"][..., None], _rsqrt(c["rms"])),
            ("grad", "rms")),
    # Adafactor features (AdafacMLPLOpt): factored preconditioner, its product with
    # the gradient and with each momentum.
    Feature("rsqrt_factored", lambda c: _rsqrt(c["factored"]), ("factored",)),
    Feature("grad_rsqrt_factored",
            lambda c: _outer_last(c["grad"][..., None], _rsqrt(c["factored"])),
            ("grad", "factored")),
    Feature("momenta_rsqrt_factored",
            lambda c: _outer_last(c["momenta"], _rsqrt(c["factored"])),
            ("momenta", "factored")),
    Feature("time", lambda c: tanh_step_embedding(c["step"], c["timescales"]),
            ("step", "timescales"), per_tensor=True, normalize=False),
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
      close = difflib.get_close_matches(name, list(FEATURES), n=3, cutoff=0.5)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise KeyError(f"Unknown feature {name!r}.{hint} Known: {', '.join(sorted(FEATURES))}.")
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


def build_inputs(features: Sequence[Feature], context: Context) -> jax.Array:
  """Stacks the features of one tensor into the per-parameter network's input.

  Normalized features are concatenated and second-moment normalized together (one
  fused reduction), then the per-tensor features are broadcast and appended.

  Args:
    features: from ``get``.
    context: see the module docstring; ``context["param"]`` has shape ``S``.
  Returns:
    ``(prod(S), num_inputs)`` matrix (dtype of the context), rows in C order.
  """
  shape = context["param"].shape
  size = 1
  for d in shape:
    size *= d
  normed, raw, per_tensor = [], [], []
  for f in features:
    val = f.fn(context)
    if f.per_tensor:
      per_tensor.append(val)
    elif f.normalize:
      normed.append(val)
    else:
      raw.append(val)
  cols = []
  if normed:
    cols.append(second_moment_normalize(jnp.concatenate(normed, axis=-1)).reshape(size, -1))
  cols.extend(v.reshape(size, -1) for v in raw)
  if per_tensor:
    vec = jnp.concatenate(per_tensor, axis=-1)
    cols.append(jnp.broadcast_to(vec, (size, vec.shape[-1])))
  return jnp.concatenate(cols, axis=-1)


def columns(features: Sequence[Feature], context_fn: Callable[[], Context]) -> Dict[str, slice]:
  """Which input columns each feature occupies in ``build_inputs``' output.

  The order is: normalized per-element features (in list order), unnormalized
  per-element features, then per-tensor features.
  """
  widths = {f.name: int(jax.eval_shape(lambda f=f: f.fn(context_fn())).shape[-1])
            for f in features}
  order = ([f for f in features if not f.per_tensor and f.normalize] +
           [f for f in features if not f.per_tensor and not f.normalize] +
           [f for f in features if f.per_tensor])
  out, start = {}, 0
  for f in order:
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
