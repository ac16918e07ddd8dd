"""The learned-optimizer interface and the architecture registry.

A ``LearnedOptimizer`` is built from a config dataclass. It owns no arrays:

* ``init_meta_params(key) -> theta`` creates meta-parameters (a pytree);
* ``transform(theta, num_steps=None, param_info=None)`` returns a standard
  ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params,
  value=loss)`` applies the learned rule.

The same ``transform`` is used inside meta-training (``theta`` is a tracer, the update
is differentiable) and at deployment (``theta`` is a constant). ``param_info`` is the
explicit task-to-optimizer contract (a pytree of ``tasks.ParamInfo`` matching the
params); only μP architectures require it.

The horizon contract
--------------------
``num_steps`` has one meaning everywhere a learned optimizer sees it: the **total
number of updates of the run** the transformation's state is initialized for (the
run's length; ``None``: unknown). It is *data*, not configuration:

* it may be a Python int, ``None`` or a (traced) integer scalar, so that inner runs
  of different lengths ``vmap`` together in one meta-training program;
* ``init(params)`` records it in the optimizer state (``horizon_value`` turns it into
  an int32 scalar, ``UNKNOWN_HORIZON`` = 0 for ``None``); ``update`` reads it from the
  state only, never from the closure, so ``transform(θ, num_steps=h).init(params)``
  followed by ``transform(θ).update(...)`` gives the same updates as using
  ``transform(θ, num_steps=h)`` throughout (``tests/lopt/test_horizon.py``);
* features of the horizon (``features.fraction_features``) see one documented value
  when it is unknown (all zeros: fraction 0 and a "horizon known" flag of 0), the same
  in meta-training and evaluation.

Meta-training (``metaopt.meta.unroll``) passes every in-flight inner run its own
horizon, the number of updates the truncation schedule gives that run (unknown for
``never_ending`` runs), exactly as evaluation (``metaopt.eval.entrants``,
``metaopt.load(name, num_steps=...)``) passes the run's step budget. Horizon-free
architectures accept ``num_steps`` and ignore it (their state has no horizon).
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
from typing import Any, Dict, Optional, Type

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasks.registry import Registry

MetaParams = Any


class LearnedOptimizer(abc.ABC):
  """Base class: a config and two pure methods. Subclasses set ``arch`` and
  ``Config`` and register themselves with ``register``."""

  #: Architecture name used in files and configs (e.g. ``"mlp"``).
  arch: str = ""
  #: The config dataclass of this architecture.
  Config: Type = None

  def __init__(self, config=None, **overrides):
    if config is None:
      config = self.Config()
    if overrides:
      config = replace_config(config, overrides)
    self.config = config

  @abc.abstractmethod
  def init_meta_params(self, key: jax.Array) -> MetaParams:
    """Meta-parameters theta (a pytree of float32 arrays)."""

  @abc.abstractmethod
  def transform(self, theta: MetaParams, *, num_steps: Any = None,
                param_info: Any = None) -> optax.GradientTransformationExtraArgs:
    """An optax transformation applying the learned rule with meta-params theta.

    ``num_steps``: the run's total number of updates (int, traced int scalar, or
    ``None`` = unknown); recorded by ``init``, read by ``update`` from the state (module
    docstring)."""

  def __repr__(self):
    return f"{type(self).__name__}({self.config})"


#: The value of ``horizon_value(None)``: the run's length is unknown.
UNKNOWN_HORIZON = 0


def horizon_value(num_steps: Any) -> jax.Array:
  """The horizon as stored in an optimizer state: an int32 scalar, ``UNKNOWN_HORIZON``
  (0) for ``None``.

  Args:
    num_steps: ``None``, a Python int >= 1, or a (possibly traced) integer scalar; a
      traced value < 1 also means unknown (``metaopt.meta.unroll`` passes 0 for runs
      without an end).
  Raises:
    ValueError: for a Python number < 1, a non-integer or a non-scalar array.
  """
  if num_steps is None:
    return jnp.asarray(UNKNOWN_HORIZON, jnp.int32)
  if isinstance(num_steps, bool):
    raise ValueError(f"num_steps must be None or an integer >= 1, got {num_steps!r}.")
  if isinstance(num_steps, (numbers.Real, np.generic)):
    if num_steps != int(num_steps) or num_steps < 1:
      raise ValueError(f"num_steps must be None (unknown) or an integer >= 1, the run's "
                       f"number of updates; got {num_steps!r}.")
    return jnp.asarray(int(num_steps), jnp.int32)
  if jnp.ndim(num_steps) != 0:
    raise ValueError(f"num_steps must be a scalar, got shape {jnp.shape(num_steps)}.")
  value = jnp.asarray(num_steps)
  if not jnp.issubdtype(value.dtype, jnp.integer):
    raise ValueError(f"num_steps must be an integer scalar, got dtype {value.dtype}.")
  return jnp.maximum(value.astype(jnp.int32), UNKNOWN_HORIZON)


def replace_config(config, overrides: Dict[str, Any]):
  """``dataclasses.replace`` with a clear error for keys the config lacks."""
  fields = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
        f"{type(config).__name__} has no field(s) {unknown}; known fields: {sorted(fields)}.")
  return dataclasses.replace(config, **overrides)


ARCHS: Registry[Type[LearnedOptimizer]] = Registry("learned-optimizer architecture")


def register(cls: Type[LearnedOptimizer]) -> Type[LearnedOptimizer]:
  """Class decorator: registers an architecture under ``cls.arch``."""
  if not cls.arch or cls.Config is None:
    raise ValueError(f"{cls.__name__} must set `arch` and `Config`.")
  return ARCHS.register(cls.arch, cls)


def arch_names():
  return ARCHS.names()


def build(arch: str, config: Optional[Dict[str, Any]] = None) -> LearnedOptimizer:
  """Builds the architecture ``arch`` from a (JSON-like) dict of config fields."""
  cls = ARCHS.get(arch)
  # JSON turns tuples into lists; configs hold tuples so they stay hashable.
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in (config or {}).items()}
  return cls(replace_config(cls.Config(), fields))


def config_to_dict(config) -> Dict[str, Any]:
  """JSON-friendly dict of a config dataclass (tuples become lists)."""
  return dataclasses.asdict(config)
