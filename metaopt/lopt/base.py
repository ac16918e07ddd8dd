"""The learned-optimizer interface and the architecture registry.

A ``LearnedOptimizer`` is built from a config dataclass. It owns no arrays:

* ``init_meta_params(key) -> theta`` creates meta-parameters (a pytree);
* ``transform(theta, num_steps=None, param_info=None)`` returns a standard
  ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params,
  value=loss)`` applies the learned rule.

The same ``transform`` is used inside meta-training (``theta`` is a tracer, the update
is differentiable) and at deployment (``theta`` is a constant). ``num_steps`` (the
training horizon) is optional everywhere: ``None`` selects the horizon-free mode.
``param_info`` is the explicit task-to-optimizer contract (a pytree of
``tasks.ParamInfo`` matching the params); only μP architectures require it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Dict, Optional, Type

import jax
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
  def transform(self, theta: MetaParams, *, num_steps: Optional[int] = None,
                param_info: Any = None) -> optax.GradientTransformationExtraArgs:
    """An optax transformation applying the learned rule with meta-params theta."""

  def __repr__(self):
    return f"{type(self).__name__}({self.config})"


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
