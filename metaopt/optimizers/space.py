"""Hyper-parameter search-space axes: ``LogUniform``, ``Uniform``, ``Choice``.

Each axis samples one Python value from an explicit PRNG key (``sample(key)``) and
lists ``n`` evenly spaced values for a grid (``grid(n)``: geometric spacing for
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

  def sample(self, key: jax.Array) -> float:
    u = float(jax.random.uniform(key, (), minval=math.log(self.lo), maxval=math.log(self.hi)))
    return math.exp(u)

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

  def sample(self, key: jax.Array) -> float:
    return float(jax.random.uniform(key, (), minval=self.lo, maxval=self.hi))

  def grid(self, n: int) -> List[float]:
    if n == 1:
      return [(self.lo + self.hi) / 2]
    return [float(v) for v in np.linspace(self.lo, self.hi, n)]

  def contains(self, value: Any) -> bool:
    return self.lo - 1e-12 <= value <= self.hi + 1e-12


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of a finite list of options (any hashable values)."""
  options: Tuple[Any, ...]

  def __init__(self, options):
    options = tuple(options)
    if not options:
      raise ValueError("Choice needs at least one option.")
    object.__setattr__(self, "options", options)

  def sample(self, key: jax.Array) -> Any:
    return self.options[int(jax.random.randint(key, (), 0, len(self.options)))]

  def grid(self, n: int) -> List[Any]:
    del n  # A categorical axis is always enumerated in full.
    return list(self.options)

  def contains(self, value: Any) -> bool:
    return value in self.options


Axis = (LogUniform, Uniform, Choice)
