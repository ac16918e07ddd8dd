"""Tuning on a tiny quadratic: the best learning rate, recorded trials, divergence."""

import math

import numpy as np
import pytest

from metaopt import optimizers
from metaopt.optimizers import TUNE_SEED_OFFSET
from tests.optimizers.tiny_tasks import diag_quadratic


def test_lr_sweep_finds_the_stable_optimum_and_records_divergence():
  # 0.5 * (x1**2 + 10 * x2**2): plain GD is stable for lr < 2/10 and fastest near
  # 2/11; the grid 1e-4 ... 10 (one point per decade) holds 0.1 as the best stable lr.
  task = diag_quadratic((1.0, 10.0))
  res = optimizers.tune(task, "sgd", steps=60, method="grid", grid_points=6,
                        search=("learning_rate",))
  lrs = [t.config["learning_rate"] for t in res.trials]
  np.testing.assert_allclose(lrs, [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0], rtol=1e-6)
  assert 0.05 <= res.best_config["learning_rate"] <= 0.2
  assert res.best_score == min(t.score for t in res.trials)
  assert res.best_config == optimizers.config("sgd", learning_rate=lrs[3])
  for t in res.trials:
    lr = t.config["learning_rate"]
    if lr >= 1.0:  # |1 - 10 lr| > 1: blows up to inf/NaN.
      assert t.diverged and t.score == math.inf
    else:
      assert not t.diverged and math.isfinite(t.score)
      assert t.train_loss.shape == (60,)
      np.testing.assert_allclose(t.score, t.valid_loss[-1])
  # Scores are the closed-form losses 0.5 * sum(d * (1 - lr d)**(2 * steps)).
  for t in res.trials[:4]:
    lr = t.config["learning_rate"]
    exact = 0.5 * ((1 - lr) ** 120 + 10 * (1 - 10 * lr) ** 120)
    np.testing.assert_allclose(t.score, exact, rtol=1e-3, atol=1e-30)
  assert res.seed == TUNE_SEED_OFFSET
  assert len(res.summary()) == 6


def test_grid_size_follows_num_trials():
  # adam: 2 numeric axes (learning_rate, b1) x Choice b2 with 2 options.
  configs = optimizers.search_configs("adam", method="grid", num_trials=18,
                                      search=("learning_rate", "b1", "b2"))
  assert len(configs) == 3 * 3 * 2
  # Its whole space: 3 numeric axes x b2 (2) x lr_decay (3): one point per numeric axis.
  assert len(optimizers.search_configs("adam", method="grid", num_trials=18)) == 6
  assert len(optimizers.search_configs("adam", method="grid", num_trials=8,
                                       search=("learning_rate",))) == 8
  with pytest.raises(ValueError, match="categorical"):
    optimizers.search_configs("adam", method="grid", num_trials=1)


def test_random_search_is_reproducible_per_seed():
  a = optimizers.search_configs("adamw", method="random", num_trials=4, seed=3)
  b = optimizers.search_configs("adamw", method="random", num_trials=4, seed=3)
  c = optimizers.search_configs("adamw", method="random", num_trials=4, seed=4)
  assert a == b and a != c
  assert len({cfg["learning_rate"] for cfg in a}) == 4


def test_random_tune_and_best_valid_objective():
  task = diag_quadratic((1.0, 4.0))
  res = optimizers.tune(task, "momentum", steps=20, num_trials=3, method="random",
                        objective="best_valid", seed=2, eval_every=5,
                        fixed={"momentum": 0.5}, search=("learning_rate",))
  assert len(res.trials) == 3
  for t in res.trials:
    if not t.diverged:
      np.testing.assert_allclose(t.score, np.min(t.valid_loss))
  assert res.best_config["momentum"] == 0.5
  assert res.seed == TUNE_SEED_OFFSET + 2


def test_tune_errors():
  task = diag_quadratic()
  with pytest.raises(ValueError, match="method"):
    optimizers.tune(task, "sgd", 5, method="bayes")
  with pytest.raises(ValueError, match="objective"):
    optimizers.tune(task, "sgd", 5, objective="last")
  with pytest.raises(ValueError, match="search space has"):
    optimizers.tune(task, "sgd", 5, search=("momentum",))
  with pytest.raises(ValueError, match="both searched and fixed"):
    optimizers.tune(task, "sgd", 5, fixed={"learning_rate": 0.1})
  with pytest.raises(KeyError, match="Did you mean"):
    optimizers.tune(task, "sgdd", 5)


@pytest.mark.parametrize("name,points", [("sgd", 3), ("sophia", 2)])
def test_vectorized_lr_sweep_equals_one_run_per_lr(name, points):
  # sgd: includes diverging learning rates; sophia: obj_fn through inject_hyperparams.
  task = diag_quadratic((1.0, 10.0))
  kw = dict(steps=30, method="grid", grid_points=points, search=("learning_rate",),
            eval_every=10)
  vec = optimizers.tune(task, name, vectorize=True, **kw)
  seq = optimizers.tune(task, name, vectorize=False, **kw)
  assert any(t.diverged for t in seq.trials) == (name == "sgd")
  for a, b in zip(vec.trials, seq.trials):
    assert a.config == b.config and a.diverged == b.diverged
    np.testing.assert_array_equal(a.eval_steps, b.eval_steps)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a.valid_loss, b.valid_loss, rtol=1e-4, atol=1e-7)
    assert a.score == pytest.approx(b.score, rel=1e-4)
