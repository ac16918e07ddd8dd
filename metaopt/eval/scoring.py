"""Leaderboard scoring: pure NumPy functions over loss curves and times.

Definitions (all documented here once; the report links to this docstring):

* **Smoothed train loss.** For a per-step train-loss curve ``l_1..l_T`` and a window
  ``w``, ``m_t = mean(l_{max(1,t-w+1)} .. l_t)`` (trailing mean; non-finite values
  make ``m_t = +inf``) and the *running-min smoothed loss* ``c_t = min_{s<=t} m_s``.
  It is monotone, so "reached the target by step t" is well defined and noise in a
  single mini-batch cannot fake it.
* **Target** of a task: the upper median over evaluation seeds (``sorted[n // 2]``;
  the median for odd ``n``) of ``c_T`` of the reference optimizer (tuned Adam) at the
  full budget ``T``. The upper median guarantees that the reference itself reaches the
  target on a majority of its seeds, also for an even number of seeds.
* **Steps to target** of a run: the smallest ``t`` (1-based step count) with
  ``c_t <= target``; ``+inf`` when never reached (NaN/diverged runs included).
  **Seconds to target**: ``steps_to_target * wall_time / T`` (the measured time per
  step of that run, the optimizer's own overhead included; compilation excluded).
* **Per task**: median over seeds of steps (seconds) to target (``inf`` counts as
  larger than everything, so a majority of failed seeds gives ``inf``).
* **AlgoPerf**: ratio ``r = t / min_o t_o`` over the optimizers compared;
  profile ``rho(tau) = #{tasks: r <= tau} / #tasks``; benchmark score
  ``B = 1/(r_max-1) * integral_1^{r_max} rho(tau) dtau``, integrated exactly: each
  task with ``r <= r_max`` contributes ``(r_max - r) / #tasks``.
* **Speedup over tuned Adam** on a task: ``t_adam / t``. Its geometric mean is taken
  over the tasks the optimizer reached (``inf`` times are excluded and counted
  separately in ``reached``); ``frac_faster``: fraction of all tasks with
  ``t < t_adam`` (strictly).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Sequence

import numpy as np

INF = float("inf")


def smoothed_curve(train_loss: Sequence[float], window: int) -> np.ndarray:
  """Running minimum of the trailing ``window``-step mean; non-finite -> +inf.

  Args:
    train_loss: (T,) per-step train losses (NaN after divergence).
    window: smoothing window ``w >= 1``.
  Returns:
    (T,) float64 ``c_t`` (see module docstring).
  """
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}.")
  x = np.asarray(train_loss, np.float64)
  bad = ~np.isfinite(x)
  xs = np.where(bad, 0.0, x)
  csum = np.concatenate([[0.0], np.cumsum(xs)])
  cbad = np.concatenate([[0], np.cumsum(bad)])
  t = np.arange(1, len(x) + 1)
  lo = np.maximum(0, t - window)
  mean = (csum[t] - csum[lo]) / (t - lo)
  mean = np.where(cbad[t] - cbad[lo] > 0, INF, mean)
  return np.minimum.accumulate(mean) if len(mean) else mean


def target_loss(finals: Iterable[float]) -> float:
  """Upper median of the reference's final ``c_T`` values (NaN counts as ``inf``)."""
  v = np.asarray(list(finals), np.float64)
  if v.size == 0:
    return float("nan")
  v = np.sort(np.where(np.isnan(v), INF, v))
  return float(v[len(v) // 2])


def steps_to_target(curve: Sequence[float], target: float) -> float:
  """First 1-based step ``t`` with ``curve[t-1] <= target``; ``inf`` if never.

  ``curve`` is a running-min smoothed curve (``smoothed_curve``); a NaN target
  (no reference) is never reached.
  """
  c = np.asarray(curve, np.float64)
  if not math.isfinite(target):
    return INF
  hit = np.nonzero(c <= target)[0]
  return float(hit[0] + 1) if len(hit) else INF


def seconds_to_target(steps: float, wall_time: float, total_steps: int) -> float:
  """``steps * wall_time / total_steps``; ``inf`` when not reached or time unknown."""
  if not math.isfinite(steps) or not math.isfinite(wall_time):
    return INF
  return steps * wall_time / total_steps


def median_time(times: Iterable[float]) -> float:
  """Median over seeds, NaN treated as ``inf`` (AlgoPerf: a miss is infinite time)."""
  t = np.asarray(list(times), np.float64)
  if t.size == 0:
    return INF
  t = np.where(np.isnan(t), INF, t)
  t = np.sort(t)
  n = len(t)
  if n % 2:
    return float(t[n // 2])
  a, b = t[n // 2 - 1], t[n // 2]
  return float(INF if math.isinf(b) else (a + b) / 2)


def nanmedian_or_nan(values: Iterable[float]) -> float:
  """Median of the finite values (losses); NaN when none is finite."""
  v = np.asarray(list(values), np.float64)
  v = v[np.isfinite(v)]
  return float(np.median(v)) if v.size else float("nan")


def performance_ratios(times: Mapping[str, Mapping[str, float]]) -> Dict[str, Dict[str, float]]:
  """AlgoPerf performance ratios.

  Args:
    times: ``{optimizer: {task: time}}`` (per-task medians; ``inf`` = missed). Every
      optimizer must list the same tasks.
  Returns:
    ``{optimizer: {task: r}}`` with ``r = t / min over optimizers of t`` (``inf`` when
    the optimizer missed, or when no optimizer reached the task).
  """
  opts = list(times)
  if not opts:
    return {}
  task_set = set(times[opts[0]])
  for o in opts:
    if set(times[o]) != task_set:
      raise ValueError(f"optimizer {o!r} has tasks {sorted(times[o])}, expected {sorted(task_set)}.")
  best = {t: min(float(times[o][t]) for o in opts) for t in task_set}
  out = {}
  for o in opts:
    out[o] = {}
    for t in task_set:
      x, b = float(times[o][t]), best[t]
      if not (math.isfinite(x) and math.isfinite(b)):
        out[o][t] = INF
      elif b > 0:
        out[o][t] = x / b
      else:  # A zero best time: only the optimizers that tie it have ratio 1.
        out[o][t] = 1.0 if x == 0 else INF
  return out


def performance_profile(ratios: Iterable[float], taus: Sequence[float]) -> np.ndarray:
  """``rho(tau)`` = fraction of tasks with ``r <= tau``, for each ``tau``."""
  r = np.asarray(list(ratios), np.float64)
  taus = np.asarray(taus, np.float64)
  if r.size == 0:
    return np.zeros_like(taus)
  return (r[None, :] <= taus[:, None]).mean(axis=1)


def benchmark_score(ratios: Iterable[float], r_max: float = 4.0) -> float:
  """AlgoPerf score ``B = 1/(r_max-1) * int_1^{r_max} rho(tau) dtau`` (exact)."""
  r = np.asarray(list(ratios), np.float64)
  if r.size == 0:
    return float("nan")
  if np.any(r < 1.0):
    raise ValueError(f"performance ratios must be >= 1, got {r.tolist()}.")
  area = np.where(r <= r_max, r_max - r, 0.0)
  return float(area.sum() / r.size / (r_max - 1.0))


def speedups(times: Mapping[str, float], reference: Mapping[str, float]) -> Dict[str, float]:
  """Per task ``reference[t] / times[t]`` (0 when missed, NaN without a reference)."""
  out = {}
  for t, x in times.items():
    ref = float(reference.get(t, INF))
    x = float(x)
    if not math.isfinite(ref):
      out[t] = float("nan")
    elif not math.isfinite(x):
      out[t] = 0.0
    else:
      out[t] = ref / x
  return out


def geomean_speedup(speedup: Mapping[str, float]) -> float:
  """Geometric mean over the tasks reached (speedup > 0, finite); NaN if none."""
  v = np.asarray([s for s in speedup.values() if math.isfinite(s) and s > 0], np.float64)
  return float(np.exp(np.mean(np.log(v)))) if v.size else float("nan")


def fraction_faster(times: Mapping[str, float], reference: Mapping[str, float]) -> float:
  """Fraction of tasks where ``times[t] < reference[t]`` (strictly; misses lose)."""
  if not times:
    return float("nan")
  wins = sum(1 for t, x in times.items()
             if math.isfinite(float(x)) and float(x) < float(reference.get(t, INF)))
  return wins / len(times)
