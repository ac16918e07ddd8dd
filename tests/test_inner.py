"""metaopt.inner: the one inner loop, checked against hand-written references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import inner, optimizers
from metaopt.train import train
from tests.optimizers.tiny_tasks import diag_quadratic, linreg


def test_mark_divergence_cuts_curve_and_later_evaluations():
  losses = np.array([3.0, 2.0, 1.0, np.inf, 5.0, 6.0])
  res = inner.mark_divergence(losses, [2, 4, 6], [1.5, 0.9, 7.0])
  assert res.diverged_at == 3 and res.status == "diverged"
  np.testing.assert_array_equal(res.train_loss[:3], [3.0, 2.0, 1.0])
  assert np.all(np.isnan(res.train_loss[3:]))
  # Evaluated after 2 steps: kept; after 4 and 6 (>= 3): NaN.
  assert res.valid_loss[0] == 1.5 and np.all(np.isnan(res.valid_loss[1:]))


def test_mark_divergence_pads_a_stopped_run_and_keeps_a_finite_one():
  stopped = inner.mark_divergence(np.array([1.0, np.nan]), [2, 4], [0.5])
  assert stopped.train_loss.shape == (4,) and stopped.diverged_at == 1
  assert np.all(np.isnan(stopped.valid_loss))
  ok = inner.mark_divergence(np.array([2.0, 1.0]), [2], [0.7])
  assert ok.status == "ok" and ok.diverged_at is None and ok.final_valid_loss == 0.7


def test_mark_divergence_blowup_is_divergence_only_when_asked():
  losses = np.array([2.0, 1.5, 30.0, 2.5e3, 9.0])
  plain = inner.mark_divergence(losses, [5], [1.0])
  assert plain.status == "ok"  # Finite losses: no divergence without a blow-up factor.
  res = inner.mark_divergence(losses, [2, 5], [1.0, 1.0], blowup_factor=1e3)
  # Threshold 1e3 * max(|2.0|, floor 1.0) = 2000: step 3 (2500) is the blow-up.
  assert res.diverged_at == 3 and np.all(np.isnan(res.train_loss[3:]))
  assert res.valid_loss[0] == 1.0 and np.isnan(res.valid_loss[1])
  # The floor: an initial loss near 0 does not make a loss of 10 a blow-up.
  small = inner.divergence_step([1e-6, 10.0, 999.0], blowup_factor=1e3)
  assert small is None
  assert inner.divergence_step([1e-6, 1001.0], blowup_factor=1e3) == 1
  # A later chunk is judged against the run's initial loss.
  assert inner.divergence_step([3.0, 5.0], blowup_factor=2.0, initial_loss=2.0) == 1
  with pytest.raises(ValueError, match="blowup_factor must be > 1"):
    inner.divergence_step([1.0], blowup_factor=0.5)


def test_eval_schedule():
  np.testing.assert_array_equal(inner.eval_schedule(10, 5), [5, 10])
  np.testing.assert_array_equal(inner.eval_schedule(11, 5), [5, 10, 11])
  with pytest.raises(ValueError, match="eval_every must be positive"):
    inner.eval_schedule(10, 0)


def test_update_passes_value_and_objective_only_to_those_that_take_them():
  seen = {}

  def update_fn(updates, state, params=None, **extra):
    seen.update(extra)
    return updates, state

  extra_args = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update_fn)
  g = {"x": jnp.ones(2)}
  inner.update(extra_args, g, optax.EmptyState(), g, jnp.float32(2.0), obj_fn=len)
  assert float(seen["value"]) == 2.0 and seen["obj_fn"] is len
  # A plain transformation (no **extra) must not receive them.
  plain = optax.GradientTransformation(lambda p: optax.EmptyState(),
                                       lambda u, s, p=None: (u, s))
  out, _ = inner.update(plain, g, optax.EmptyState(), g, jnp.float32(2.0), obj_fn=len)
  np.testing.assert_array_equal(out["x"], g["x"])


def test_run_is_gradient_descent_on_a_quadratic():
  """Closed form: GD with lr 0.1 on 0.5 * sum(d x^2) from x = 1 gives x = (1 - 0.1 d)^k."""
  d = np.array([1.0, 4.0])
  task = diag_quadratic(tuple(d))
  _, losses, valid = jax.jit(lambda data: inner.run(task, optax.sgd(0.1), 0, data, 7, 3))(
      task.data)
  k = np.arange(7)[:, None]
  np.testing.assert_allclose(losses, 0.5 * np.sum(d * (1 - 0.1 * d) ** (2 * k), axis=1),
                             rtol=1e-6)
  at = np.array([3, 6, 7])[:, None]
  np.testing.assert_allclose(valid, 0.5 * np.sum(d * (1 - 0.1 * d) ** (2 * at), axis=1),
                             rtol=1e-6)


def test_train_and_run_agree_and_vmap_over_seeds():
  task = linreg()
  opt = optimizers.get("adam", learning_rate=0.03)
  res = train(task, opt, 25, seed=4, eval_every=10)
  fn = jax.jit(jax.vmap(lambda s, data: inner.run(task, opt, s, data, 25, 10)[1:],
                        in_axes=(0, None)))
  losses, valid = fn(jnp.arange(3, 6), task.data)
  np.testing.assert_allclose(losses[1], res.train_loss, rtol=1e-6)
  np.testing.assert_allclose(valid[1], res.valid_loss, rtol=1e-6)
  np.testing.assert_array_equal(res.eval_steps, [10, 20, 25])
  assert not np.allclose(losses[0], losses[1])  # Seeds differ.


def test_evaluation_is_deterministic_and_covers_the_whole_split():
  """Validation does not depend on the run's key or step, and a task with an evaluation
  set is scored on every example of it (the mean over chunks equals the loss of the
  whole split computed directly); a noisy quadratic is scored on its exact objective."""
  import tasks  # pylint: disable=import-outside-toplevel
  from tasks import common  # pylint: disable=import-outside-toplevel
  task = tasks.get("logistic_digits")
  params = jax.tree_util.tree_map(
      lambda p: 0.1 * jax.random.normal(jax.random.PRNGKey(3), p.shape),
      task.init(jax.random.PRNGKey(0)))
  a = inner.evaluate(task, params, task.data, jax.random.PRNGKey(1))
  b = inner.evaluate(task, params, task.data, jax.random.PRNGKey(2))
  assert float(a) == float(b)
  rows = task.data["inner_valid"]
  whole = {"x": common.features_of(rows), "label": rows["label"].astype(jnp.int32)}
  np.testing.assert_allclose(float(a), float(task.loss(params, whole, None)), rtol=1e-5)
  quad = tasks.get("quadratic_d100_cond100_noise1")
  x = quad.init(jax.random.PRNGKey(0))
  exact = quad.loss(x, {"noise": jnp.zeros((100,), jnp.float32)}, None)
  np.testing.assert_allclose(float(inner.evaluate(quad, x, quad.data, jax.random.PRNGKey(5))),
                             float(exact), rtol=1e-6)
