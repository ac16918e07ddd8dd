"""Scoring against hand-computed values (curves, medians, AlgoPerf profile and score)."""

import math

import numpy as np
import pytest
from scipy import integrate

from metaopt.eval import scoring

INF = math.inf


def test_seconds_to_target():
  assert scoring.seconds_to_target(50, 2.0, 100) == pytest.approx(1.0)
  assert scoring.seconds_to_target(INF, 2.0, 100) == INF
  assert scoring.seconds_to_target(10, float("nan"), 100) == INF


def test_median_time_inf_and_nan():
  assert scoring.median_time([3, INF, 5]) == 5
  assert scoring.median_time([3, 5]) == 4
  assert scoring.median_time([3, INF]) == INF  # Half the seeds missed.
  assert scoring.median_time([float("nan"), 1, 2]) == 2  # NaN counts as a miss.
  assert scoring.median_time([INF, INF, 1]) == INF
  assert scoring.median_time([]) == INF


def test_performance_ratios_profile_and_score():
  times = {"A": {"t1": 10.0, "t2": 20.0, "t3": INF},
           "B": {"t1": 20.0, "t2": 10.0, "t3": 30.0}}
  r = scoring.performance_ratios(times)
  assert r["A"] == {"t1": 1.0, "t2": 2.0, "t3": INF}
  assert r["B"] == {"t1": 2.0, "t2": 1.0, "t3": 1.0}
  # rho_A: r in {1, 2, inf} -> 1/3 on [1, 2), 2/3 on [2, 4].
  np.testing.assert_allclose(scoring.performance_profile(r["A"].values(), [1, 1.5, 2, 4]),
                             [1 / 3, 1 / 3, 2 / 3, 2 / 3])
  # B_A = 1/3 * (1/3*(4-1) + 1/3*(4-2) + 0) = 5/9;  B_B = 1/3 * (2 + 3 + 3)/3 = 8/9.
  assert scoring.benchmark_score(r["A"].values(), 4.0) == pytest.approx(5 / 9)
  assert scoring.benchmark_score(r["B"].values(), 4.0) == pytest.approx(8 / 9)


def test_score_equals_numerical_integral_of_profile():
  ratios = [1.0, 1.3, 2.7, 3.99, 5.0, INF]
  exact = scoring.benchmark_score(ratios, 4.0)
  # Independent reference: quad over the step function, split at its jumps.
  f = lambda tau: float(scoring.performance_profile(ratios, [tau])[0])
  pts = [1.0, 1.3, 2.7, 3.99, 4.0]
  area = sum(integrate.quad(f, a, b)[0] for a, b in zip(pts[:-1], pts[1:]))
  assert exact == pytest.approx(area / 3.0, rel=1e-9)
  # A ratio above r_max counts as a miss; all-best scores 1.
  assert scoring.benchmark_score([5.0], 4.0) == 0.0
  assert scoring.benchmark_score([1.0, 1.0], 4.0) == 1.0
  with pytest.raises(ValueError, match=">= 1"):
    scoring.benchmark_score([0.5])


def test_ratios_when_nobody_reached_and_mismatched_tasks():
  r = scoring.performance_ratios({"A": {"t": INF}, "B": {"t": INF}})
  assert r == {"A": {"t": INF}, "B": {"t": INF}}
  with pytest.raises(ValueError, match="tasks"):
    scoring.performance_ratios({"A": {"t": 1.0}, "B": {"u": 1.0}})
