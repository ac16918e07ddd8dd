"""Quasi-random points for hyper-parameter search: a randomly shifted Halton sequence.

AlgoPerf tunes its baselines by quasi-random search: low-discrepancy points cover a
box more evenly than independent draws, so a handful of trials leaves no large
region of the search space unexplored. The Halton sequence puts the radical inverse
of the point index in base ``p_d`` (the ``d``-th prime) on axis ``d``; it comes from
``scipy.stats.qmc.Halton`` (unscrambled; scipy ships with jax). A study adds one
uniform random shift per axis, modulo 1 (a Cranley-Patterson rotation), so that
studies with different seeds explore different points while each stays evenly
spread. ``primes`` and ``radical_inverse`` state the definition (the tests check
scipy's points against it).
"""

from __future__ import annotations

from typing import List

import numpy as np
from scipy.stats import qmc


def primes(n: int) -> List[int]:
  """The first ``n`` primes (the Halton bases of axes ``0..n-1``)."""
  out: List[int] = []
  candidate = 2
  while len(out) < n:
    if all(candidate % p for p in out if p * p <= candidate):
      out.append(candidate)
    candidate += 1
  return out


def radical_inverse(index: int, base: int) -> float:
  """The digits of ``index`` in ``base`` mirrored around the radix point:
  ``radical_inverse(6, 2) = 0.011 (binary) = 0.375``."""
  if index < 0 or base < 2:
    raise ValueError(f"Need index >= 0 and base >= 2, got index={index}, base={base}.")
  value, scale = 0.0, 1.0 / base
  while index:
    index, digit = divmod(index, base)
    value += digit * scale
    scale /= base
  return value


def halton(num_points: int, dims: int, start: int = 1) -> np.ndarray:
  """Points ``start .. start + num_points - 1`` of the Halton sequence, ``(num_points,
  dims)`` in [0, 1). ``start=1`` skips the origin (index 0 is 0 on every axis)."""
  if num_points < 0 or dims < 0 or start < 0:
    raise ValueError(f"Need num_points, dims, start >= 0, got {num_points}, {dims}, {start}.")
  if num_points == 0 or dims == 0:
    return np.zeros((num_points, dims), np.float64)
  sequence = qmc.Halton(d=dims, scramble=False)
  sequence.fast_forward(start)
  return np.asarray(sequence.random(num_points), np.float64)


def shifted_halton(num_points: int, dims: int, seed: int) -> np.ndarray:
  """``halton(num_points, dims)`` plus one uniform shift per axis drawn from ``seed``,
  modulo 1: the points of one study, ``(num_points, dims)`` in [0, 1)."""
  shift = np.random.default_rng(seed).random(dims)
  return np.mod(halton(num_points, dims) + shift, 1.0)
