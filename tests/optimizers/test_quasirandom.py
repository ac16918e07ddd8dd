"""Quasi-random search: the Halton sequence, its per-study shift, and the configs."""

import math

import numpy as np
import pytest

from metaopt import optimizers
from metaopt.optimizers import quasirandom
from tests.optimizers.tiny_tasks import diag_quadratic


def test_halton_first_points_by_hand():
  """scipy's unscrambled Halton points are the definition: the radical inverse of the
  index in the d-th prime base (computed by hand here)."""
  assert quasirandom.primes(6) == [2, 3, 5, 7, 11, 13]
  assert quasirandom.radical_inverse(6, 2) == 0.375  # 110 -> 0.011 (binary).
  assert quasirandom.radical_inverse(5, 3) == pytest.approx(2 / 3 + 1 / 9)  # 12 -> 0.21.
  expected = [[1 / 2, 1 / 3, 1 / 5],
              [1 / 4, 2 / 3, 2 / 5],
              [3 / 4, 1 / 9, 3 / 5],
              [1 / 8, 4 / 9, 4 / 5],
              [5 / 8, 7 / 9, 1 / 25]]
  np.testing.assert_allclose(quasirandom.halton(5, 3), expected, rtol=1e-12)
  assert quasirandom.halton(0, 3).shape == (0, 3)
  with pytest.raises(ValueError, match="base >= 2"):
    quasirandom.radical_inverse(3, 1)


def test_halton_is_the_radical_inverse_definition():
  bases = quasirandom.primes(6)
  ref = [[quasirandom.radical_inverse(i, b) for b in bases] for i in range(7, 47)]
  np.testing.assert_allclose(quasirandom.halton(40, 6, start=7), ref, rtol=1e-12)
  np.testing.assert_array_equal(quasirandom.halton(3, 2, start=0)[0], [0.0, 0.0])


def test_shifted_halton_is_even_and_seeded():
  a = quasirandom.shifted_halton(12, 5, seed=0)
  assert a.shape == (12, 5) and np.all((a >= 0) & (a < 1))
  np.testing.assert_array_equal(a, quasirandom.shifted_halton(12, 5, seed=0))
  assert not np.allclose(a, quasirandom.shifted_halton(12, 5, seed=1))
  # Low discrepancy: 12 points of the base-2 axis put 3 +- 1 in every quarter
  # (independent draws leave a quarter with fewer than 2 about a third of the time).
  counts = np.histogram(a[:, 0], bins=4, range=(0, 1))[0]
  assert counts.min() >= 2, counts
  # The shift is a rotation modulo 1: differences between points are kept.
  unshifted = quasirandom.halton(12, 5)
  np.testing.assert_allclose(np.mod(a - unshifted, 1.0),
                             np.broadcast_to(np.mod(a[0] - unshifted[0], 1.0), a.shape),
                             atol=1e-12)


@pytest.mark.parametrize("name", ["adam", "nadamw", "momentum", "adamw"])
def test_quasirandom_configs_cover_each_axis(name):
  space = optimizers.spec(name).search_space
  configs = optimizers.search_configs(name, method="quasirandom", num_trials=16, seed=5)
  assert len(configs) == 16
  for key, axis in space.items():
    values = [cfg[key] for cfg in configs]
    assert all(axis.contains(v) for v in values), (key, values)
    if isinstance(axis, optimizers.Choice):
      assert set(values) == set(axis.options), (key, values)  # Every option appears.
    else:
      assert len(set(values)) == 16, key
  # The learning rate spreads over its decades: every third of the log-range is hit.
  lr = space["learning_rate"]
  thirds = [int(3 * (math.log(c["learning_rate"]) - math.log(lr.lo))
                / (math.log(lr.hi) - math.log(lr.lo))) for c in configs]
  assert set(thirds) >= {0, 1, 2}
  for cfg in configs:
    optimizers.get(name, total_steps=50, **cfg)  # Every config builds.


def test_quasirandom_is_reproducible_per_seed():
  a = optimizers.search_configs("adamw", method="quasirandom", num_trials=6, seed=3)
  assert a == optimizers.search_configs("adamw", method="quasirandom", num_trials=6, seed=3)
  assert a != optimizers.search_configs("adamw", method="quasirandom", num_trials=6, seed=4)
  with pytest.raises(ValueError, match="num_trials"):
    optimizers.search_configs("adamw", method="quasirandom", num_trials=0)


def test_tune_runs_quasirandom_search():
  task = diag_quadratic((1.0, 4.0))
  search = ("learning_rate", "momentum", "lr_decay")
  res = optimizers.tune(task, "momentum", steps=20, num_trials=4, method="quasirandom",
                        seed=1, eval_every=5, search=search)
  expected = optimizers.search_configs("momentum", "quasirandom", 4, seed=1, search=search)
  assert [t.config for t in res.trials] == expected
  assert res.best_config["lr_decay"] in optimizers.DECAYS
  assert math.isfinite(res.best_score)
  optimizers.get("momentum", total_steps=20, **res.best_config)
  with pytest.raises(ValueError, match="replaces the schedule hyper-parameters"):
    optimizers.tune(task, "momentum", steps=5, num_trials=2, method="quasirandom",
                    search=search, schedule="cosine")
