"""metaopt.train.train: determinism, progress, divergence, optimizer conventions."""

import jax
import numpy as np
import optax
import pytest
from optax import contrib

from metaopt import optimizers
from metaopt.inner import eval_params, eval_schedule
from metaopt.train import train
from tests.optimizers.tiny_tasks import diag_quadratic, linreg


@pytest.fixture(scope="module")
def task():
  return linreg()


def test_same_seed_same_numbers_and_loss_decreases(task):
  opt = optimizers.get("adam", learning_rate=0.05)
  a = train(task, opt, 60, seed=0, eval_every=20)
  b = train(task, opt, 60, seed=0, eval_every=20)
  c = train(task, opt, 60, seed=1, eval_every=20)
  np.testing.assert_array_equal(a.train_loss, b.train_loss)
  np.testing.assert_array_equal(a.valid_loss, b.valid_loss)
  assert not np.allclose(a.train_loss, c.train_loss)
  np.testing.assert_array_equal(a.eval_steps, [20, 40, 60])
  assert a.train_loss.shape == (60,) and not a.diverged
  assert np.mean(a.train_loss[-10:]) < 0.2 * np.mean(a.train_loss[:5])
  assert a.valid_loss[-1] < a.valid_loss[0]


def test_divergence_is_detected_and_flagged(task):
  res = train(task, optimizers.get("sgd", learning_rate=1e3), 100, eval_every=10)
  assert res.diverged
  first_bad = int(np.argmax(~np.isfinite(res.train_loss)))
  assert 0 < first_bad < 100
  assert np.all(np.isnan(res.train_loss[(first_bad // 10 + 1) * 10:]))
  assert res.eval_steps[-1] == 100 and np.isnan(res.valid_loss[-1])
  assert np.isnan(res.final_valid_loss)


def test_a_finite_blowup_is_divergence_at_its_step():
  # SGD with lr 0.3 on 0.5 * (x1^2 + 10 x2^2) from x = 1: x2 is multiplied by
  # (1 - 3) = -2 each step, so the loss grows ~4x per step but stays finite.
  quad = diag_quadratic((1.0, 10.0))
  opt = optimizers.get("sgd", learning_rate=0.3)
  t = np.arange(40)
  expected = 0.5 * (0.7 ** (2 * t) + 10.0 * 4.0 ** t)
  first = int(np.argmax(expected > 1e3 * expected[0]))
  res = train(quad, opt, 40, eval_every=10)
  assert res.diverged and res.diverged_at == first
  np.testing.assert_allclose(res.train_loss[:first], expected[:first], rtol=1e-5)
  assert np.all(np.isnan(res.train_loss[first:]))
  plain = train(quad, opt, 40, eval_every=10, blowup_factor=None)
  assert not plain.diverged and np.all(np.isfinite(plain.train_loss))


def test_evaluations_land_on_eval_every(task):
  np.testing.assert_array_equal(eval_schedule(100, 30), [30, 60, 90, 100])
  np.testing.assert_array_equal(eval_schedule(7, 100), [7])
  rows = []
  res = train(task, optimizers.get("sgd"), 23, eval_every=10,
              callback=lambda step, m: rows.append((step, m)))
  np.testing.assert_array_equal(res.eval_steps, [10, 20, 23])
  assert [s for s, _ in rows] == [10, 20, 23]
  # The logged train loss is the mean since the previous evaluation.
  np.testing.assert_allclose(rows[1][1]["train_loss"], np.mean(res.train_loss[10:20]),
                             rtol=1e-6)
  np.testing.assert_allclose(rows[2][1]["valid_loss"], res.valid_loss[-1])


def test_bad_arguments(task):
  with pytest.raises(ValueError, match="steps must be positive"):
    train(task, optimizers.get("sgd"), 0)
  with pytest.raises(ValueError, match="eval_every"):
    train(task, optimizers.get("sgd"), 5, eval_every=0)


def test_sophia_gets_the_objective_and_follows_the_paper_rule():
  # On 0.5 * sum(d x**2) Hutchinson's estimate z * (H z) = d exactly (z = +-1), so
  # Sophia-H is deterministic and can be replayed in numpy.
  d = np.array([1.0, 3.0, 10.0])
  hp = dict(learning_rate=0.05, b1=0.9, b2=0.9, gamma=0.5, weight_decay=0.01,
            clip_threshold=1.0, update_interval=3)
  steps = 12
  res = train(diag_quadratic(d), optimizers.get("sophia", **hp), steps, eval_every=steps)
  x, m, h = np.ones(3), np.zeros(3), np.zeros(3)
  losses = []
  for t in range(steps):
    losses.append(0.5 * np.sum(d * x ** 2))
    g = d * x
    m = hp["b1"] * m + (1 - hp["b1"]) * g
    m_hat = m / (1 - hp["b1"] ** (t + 1))
    u = np.clip(m_hat / np.maximum(hp["gamma"] * h, 1e-8), -1.0, 1.0)
    if t % hp["update_interval"] == 0:  # optax refreshes h after using the old one.
      h = hp["b2"] * h + (1 - hp["b2"]) * d
    x = x - hp["learning_rate"] * (u + hp["weight_decay"] * x)
  np.testing.assert_allclose(res.train_loss, losses, rtol=1e-5)
  np.testing.assert_allclose(res.params["x"], x, rtol=1e-5)


def test_schedule_free_is_evaluated_at_the_averaged_iterate():
  task = diag_quadratic((1.0, 5.0))
  opt = optimizers.get("schedule_free_adamw", learning_rate=0.1)
  res = train(task, opt, 10, eval_every=10)
  params = task.init(jax.random.PRNGKey(0))
  tx = contrib.schedule_free_adamw(0.1, weight_decay=0.0)
  state = tx.init(params)
  for _ in range(10):
    grads = jax.grad(task.loss)(params, None, None)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  x_eval = contrib.schedule_free_eval_params(state, params)
  assert not np.allclose(x_eval["x"], params["x"])  # The distinction matters here.
  np.testing.assert_allclose(res.params["x"], x_eval["x"], rtol=1e-5)
  np.testing.assert_allclose(res.valid_loss[-1], task.loss(x_eval, None, None), rtol=1e-5)
  assert eval_params(optax.adam(0.1).init(params), params) is params


def test_compiled_programs_are_reused_for_the_same_task_and_optimizer(task):
  from metaopt import train as train_module  # pylint: disable=import-outside-toplevel
  opt = optimizers.get("adam")
  a = train(task, opt, 30, seed=0, eval_every=10)
  n = len(train_module._COMPILED)
  b = train(task, opt, 30, seed=5, eval_every=10)
  assert len(train_module._COMPILED) == n  # Nothing new compiled for another seed.
  assert not np.allclose(a.train_loss, b.train_loss)
  train(task, optimizers.get("adam"), 30, seed=0, eval_every=10)
  assert len(train_module._COMPILED) > n  # A new optimizer object compiles anew.


def test_unhashable_optimizer_still_trains():
  class Update:  # Defines __eq__ without __hash__: unhashable.
    def __eq__(self, other):
      return self is other

    def __call__(self, grads, state, params=None):
      return jax.tree_util.tree_map(lambda g: -0.1 * g, grads), state

  opt = optax.GradientTransformation(lambda params: optax.EmptyState(), Update())
  res = train(diag_quadratic((1.0, 2.0)), opt, 20, eval_every=20)
  # Plain GD with lr 0.1: x_i = (1 - 0.1 d_i)**20.
  exact = 0.5 * (0.9 ** 40 + 2 * 0.8 ** 40)
  np.testing.assert_allclose(res.valid_loss[-1], exact, rtol=1e-5)
