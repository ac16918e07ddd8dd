"""Hyper-parameter search-space axes: ``LogUniform``, ``Uniform``,
``OneMinusLogUniform``, ``Choice``.

Each axis maps a number ``u`` in [0, 1) to a value (``from_unit(u)``: the inverse
CDF of its distribution, used by quasi-random search), samples one Python value from
an explicit PRNG key (``sample(key)`` = ``from_unit`` of a uniform draw) and lists
``n`` evenly spaced values for a grid (``grid(n)``: geometric spacing for
``LogUniform``, linear for ``Uniform``, every option for ``Choice``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Tuple

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class LogUniform:
  """A positive float whose log is uniform on ``[log lo, log hi]`` (learning rates,
  weight decay, epsilons)."""
  lo: float
  hi: float

  def __post_init__(self):
    if not 0 < self.lo < self.hi:
      raise ValueError(f"LogUniform needs 0 < lo < hi, got lo={self.lo}, hi={self.hi}.")

  def from_unit(self, u: float) -> float:
    return math.exp(math.log(self.lo) + float(u) * (math.log(self.hi) - math.log(self.lo)))

  def sample(self, key: jax.Array) -> float:
    return self.from_unit(_uniform(key))

  def grid(self, n: int) -> List[float]:
    if n == 1:
      return [math.sqrt(self.lo * self.hi)]
    return [float(v) for v in np.geomspace(self.lo, self.hi, n)]

  def contains(self, value: Any) -> bool:
    # Relative tolerance: the grid end points go through exp/log.
    return self.lo * (1 - 1e-9) <= value <= self.hi * (1 + 1e-9)


@dataclasses.dataclass(frozen=True)
class Uniform:
  """A float uniform on ``[lo, hi]`` (momentum, decay rates)."""
  lo: float
  hi: float

  def __post_init__(self):
    if not self.lo < self.hi:
      raise ValueError(f"Uniform needs lo < hi, got lo={self.lo}, hi={self.hi}.")

  def from_unit(self, u: float) -> float:
    return self.lo + float(u) * (self.hi - self.lo)

  def sample(self, key: jax.Array) -> float:
    return self.from_unit(_uniform(key))

  def grid(self, n: int) -> List[float]:
    if n == 1:
      return [(self.lo + self.hi) / 2]
    return [float(v) for v in np.linspace(self.lo, self.hi, n)]

  def contains(self, value: Any) -> bool:
    return self.lo - 1e-12 <= value <= self.hi + 1e-12


@dataclasses.dataclass(frozen=True)
class OneMinusLogUniform:
  """A float below 1 whose distance to 1 is log-uniform on ``[lo, hi]`` (momentum
  coefficients, AlgoPerf's ``1 - beta1``): ``OneMinusLogUniform(0.01, 0.5)`` gives
  values in [0.5, 0.99], as densely in [0.9, 0.99] as in [0.5, 0.9]."""
  lo: float
  hi: float

  def __post_init__(self):
    if not 0 < self.lo < self.hi <= 1:
      raise ValueError(f"OneMinusLogUniform needs 0 < lo < hi <= 1, got lo={self.lo}, "
                       f"hi={self.hi}.")

  def from_unit(self, u: float) -> float:
    return 1.0 - LogUniform(self.lo, self.hi).from_unit(u)

  def sample(self, key: jax.Array) -> float:
    return self.from_unit(_uniform(key))

  def grid(self, n: int) -> List[float]:
    return [1.0 - v for v in LogUniform(self.lo, self.hi).grid(n)]

  def contains(self, value: Any) -> bool:
    return LogUniform(self.lo, self.hi).contains(1.0 - value)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of a finite list of options (any hashable values)."""
  options: Tuple[Any, ...]

  def __init__(self, options):
    options = tuple(options)
    if not options:
      raise ValueError("Choice needs at least one option.")
    object.__setattr__(self, "options", options)

  def from_unit(self, u: float) -> Any:
    return self.options[min(int(float(u) * len(self.options)), len(self.options) - 1)]

  def sample(self, key: jax.Array) -> Any:
    return self.from_unit(_uniform(key))

  def grid(self, n: int) -> List[Any]:
    del n  # A categorical axis is always enumerated in full.
    return list(self.options)

  def contains(self, value: Any) -> bool:
    return value in self.options


Axis = (LogUniform, Uniform, OneMinusLogUniform, Choice)


def _uniform(key: jax.Array) -> float:
  """One uniform draw in [0, 1) from ``key``."""
  return float(jax.random.uniform(key, ()))


#: JSON spelling of an axis (suite files): ``["log_uniform", lo, hi]``, ``["uniform",
#: lo, hi]``, ``["one_minus_log_uniform", lo, hi]`` or ``["choice", [options...]]``.
_AXIS_KINDS = {"log_uniform": LogUniform, "uniform": Uniform,
               "one_minus_log_uniform": OneMinusLogUniform}


def axis_from_json(spec) -> Any:
  """An axis from its JSON spelling (``_AXIS_KINDS`` or ``choice``); ValueError
  naming the spelling otherwise."""
  if isinstance(spec, (list, tuple)) and spec:
    kind = spec[0]
    if kind == "choice" and len(spec) == 2 and isinstance(spec[1], (list, tuple)):
      return Choice(spec[1])
    if kind in _AXIS_KINDS and len(spec) == 3:
      return _AXIS_KINDS[kind](float(spec[1]), float(spec[2]))
  raise ValueError(f"search-space axis {spec!r}: expected [KIND, low, high] with KIND in "
                   f"{sorted(_AXIS_KINDS)} or [\"choice\", [options...]].")
