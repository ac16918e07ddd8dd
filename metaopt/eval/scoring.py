"""Leaderboard scoring: pure NumPy functions over validation curves and times.

Definitions (AlgoPerf v0.6; the report links here):

* **Target** of a task: for each target-setting baseline, the median over the
  target-setting seeds of the best validation loss its tuned config reaches within
  the target-setting steps; the task's target is the lowest of these medians
  (``target_from_runs``).
* **Steps to target** of a run: the first evaluation step whose validation loss is
  <= the target (``valid_steps_to_target``); ``inf`` if never (NaN/diverged runs
  included). **Seconds to target**: steps to target x the optimizer's own time per
  compiled step (``seconds_to_target``; compilation and evaluation excluded).
* **Study**: external tuning runs N trials, its time is the fastest trial's
  (``study_time``); a self-tuning entrant's study is its one run. Per task: the
  median over studies (``median_time``; a miss is ``inf``).
* **Performance ratio** ``r = t / min_o t_o`` over the optimizers compared;
  profile ``rho(tau) = #{tasks: r <= tau} / #tasks``; benchmark score
  ``B = 1/(r_max-1) * integral_1^{r_max} rho(tau) dtau``, integrated exactly: each
  task with ``r <= r_max`` contributes ``(r_max - r) / #tasks``, over the **full**
  task count (``benchmark_scores``).
* **Normalized speedup** over the reference on a task: ``t_ref / t`` per study (0
  when missed); the (studies x tasks) matrix is summarised by its IQM with a
  bootstrap CI resampling tasks and studies (``bootstrap_ci``), and two
  entrants are compared by the probability of improvement
  (``probability_of_improvement``, rliable's definition).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Sequence

import numpy as np

INF = float("inf")


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
      raise ValueError(f"optimizer {o!r} has tasks {sorted(times[o])}, expected "
                       f"{sorted(task_set)}.")
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


def best_valid(valid_loss: Sequence[float]) -> float:
  """Lowest finite validation loss of a curve; inf when none is finite."""
  v = np.asarray(valid_loss, np.float64)
  v = v[np.isfinite(v)]
  return float(v.min()) if v.size else INF


def target_from_runs(per_setter: Mapping[str, Sequence[Sequence[float]]]) -> Dict[str, object]:
  """The target of a task from its target-setting runs.

  Args:
    per_setter: ``{baseline: [validation curve of each target-setting seed]}``.
  Returns:
    ``{"valid_loss": target, "setter": baseline, "medians": {baseline: median}}``:
    per baseline the median over seeds of each seed's best validation loss, and
    the lowest median as the target.
  """
  medians = {}
  for name, curves in per_setter.items():
    bests = np.asarray([best_valid(c) for c in curves], np.float64)
    medians[name] = float(np.median(bests)) if bests.size else INF
  if not medians:
    raise ValueError("no target-setting runs.")
  setter = min(medians, key=lambda k: (medians[k], k))
  return {"valid_loss": medians[setter], "setter": setter, "medians": medians}


def valid_steps_to_target(eval_steps: Sequence[float], valid_loss: Sequence[float],
                          target: float) -> float:
  """First evaluation step with validation loss <= ``target``; inf if never."""
  v = np.asarray(valid_loss, np.float64)
  if not math.isfinite(target) or v.size == 0:
    return INF
  hit = np.nonzero(np.isfinite(v) & (v <= target))[0]
  return float(np.asarray(eval_steps)[hit[0]]) if len(hit) else INF


def study_time(trial_times: Iterable[float]) -> float:
  """A study's time: its fastest trial (inf when no trial reached the target)."""
  t = np.asarray(list(trial_times), np.float64)
  t = np.where(np.isnan(t), INF, t)
  return float(t.min()) if t.size else INF


def normalized_speedups(times: Sequence[float], reference: float,
                        reference_fallback: float) -> np.ndarray:
  """``reference / t`` per study (0 for a miss). A reference that missed the target
  is replaced by ``reference_fallback`` (its budget: a lower bound on its time, so
  the speedup is understated, never inflated)."""
  ref = reference if math.isfinite(reference) else reference_fallback
  t = np.asarray(times, np.float64)
  with np.errstate(divide="ignore"):
    return np.where(np.isfinite(t) & (t > 0), ref / np.where(t > 0, t, 1.0), 0.0)


def iqm(x) -> float:
  """Interquartile mean: the mean of the middle 50% of all values (the lowest and
  highest ``floor(n/4)`` dropped), as ``scipy.stats.trim_mean(x, 0.25)``."""
  v = np.sort(np.asarray(x, np.float64).ravel())
  if v.size == 0:
    return float("nan")
  k = int(0.25 * v.size)
  return float(v[k:v.size - k].mean())


def bootstrap_ci(scores, statistic=iqm, reps: int = 2000, seed: int = 0,
                 level: float = 0.95, resample_tasks: bool = True):
  """Percentile bootstrap CI of ``statistic`` over a (runs, tasks) score matrix.

  Each replicate resamples runs (rows) with replacement independently within each
  task (rliable's stratified bootstrap) and, with ``resample_tasks``, first the tasks
  (columns) themselves with replacement, so the interval also covers the choice of
  workloads. Returns ``(statistic of all scores, low, high)``.
  """
  s = np.asarray(scores, np.float64)
  if s.ndim != 2 or s.size == 0:
    return float("nan"), float("nan"), float("nan")
  n, m = s.shape
  rng = np.random.default_rng(seed)
  stats = np.empty(reps)
  for b in range(reps):
    cols = rng.integers(0, m, size=m) if resample_tasks else np.arange(m)
    stats[b] = statistic(s[rng.integers(0, n, size=(n, m)), cols[None, :]])
  alpha = (1.0 - level) / 2
  lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
  return statistic(s), float(lo), float(hi)


def benchmark_scores(times: Mapping[str, Mapping[str, float]], r_max: float
                     ) -> Dict[str, tuple]:
  """AlgoPerf ``B`` of every optimizer over the *full* task count.

  Every optimizer is scored on every task of ``times`` (a missed task counts as an
  infinite time, ratio ``inf``), and ``B`` divides by the number of tasks, as
  AlgoPerf v0.6 does (a per-optimizer task count would let an entrant skip tasks).
  Returns ``{optimizer: (B, {task: ratio})}``.
  """
  ratios = performance_ratios(times)
  return {o: (benchmark_score(list(rs.values()), r_max), rs) for o, rs in ratios.items()}


def probability_of_improvement(x, y) -> float:
  """rliable's probability of improvement ``P(X > Y)`` of two (runs, tasks) score
  matrices (higher is better) over the same tasks: per task the Mann-Whitney
  statistic ``mean over run pairs of [x_i > y_j] + 0.5 [x_i == y_j]``, averaged over
  tasks. 0.5 means neither is better; ``1 - P(X > Y) = P(Y > X)``."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[1] == 0:
    raise ValueError(f"need (runs, tasks) matrices over the same tasks, got {x.shape} and "
                     f"{y.shape}.")
  per_task = []
  for t in range(x.shape[1]):
    a, b = x[:, t][:, None], y[:, t][None, :]
    per_task.append(np.mean((a > b) + 0.5 * (a == b)))
  return float(np.mean(per_task))
