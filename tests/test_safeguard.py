"""metaopt.safeguard: identical on good steps, falls back on non-finite updates and on a
failed descent test, and rescues a rule that diverges on a task built to make it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt.train import train
from tests.optimizers.tiny_tasks import diag_quadratic


def _run(opt, task, steps):
  return train(task, opt, steps, eval_every=steps, stop_on_divergence=False)


def test_well_behaved_steps_are_the_guarded_rule():
  task = diag_quadratic((1.0, 3.0))
  plain = _run(optax.adam(0.05), task, 40)
  guarded = _run(metaopt.safeguard(optax.adam(0.05), fallback=optax.sgd(1.0)), task, 40)
  # Equal up to float32 rounding (XLA fuses the selects differently).
  np.testing.assert_allclose(guarded.train_loss, plain.train_loss, rtol=2e-4, atol=1e-9)


def test_non_finite_update_uses_the_fallback_for_that_step():
  def update(grads, count, params=None, **extra):
    del params, extra  # NaN on large gradients (a rule outside its training range).
    return jax.tree_util.tree_map(lambda g: jnp.where(g[0] > 5, jnp.nan, -0.1 * g),
                                  grads), count + 1

  rule = optax.GradientTransformationExtraArgs(lambda p: jnp.zeros((), jnp.int32), update)
  opt = metaopt.safeguard(rule, fallback=optax.sgd(0.5))
  params = {"x": jnp.ones(2)}
  state = opt.init(params)
  small, large = {"x": jnp.array([1.0, 2.0])}, {"x": jnp.array([10.0, 2.0])}
  steps = []
  for grads in (small, small, large, small):
    u, state = jax.jit(opt.update)(grads, state, params)
    steps.append(np.asarray(u["x"]))
  np.testing.assert_allclose(steps[2], [-5.0, -1.0])  # sgd(0.5) on that step
  np.testing.assert_allclose(steps[3], [-0.1, -0.2])  # back to the rule
  assert int(state.num_fallback_steps) == 1 and int(state.num_failures) == 0
  assert int(state.inner) == 3  # The failed step did not advance the rule's state.


def test_failed_descent_test_undoes_the_step_and_cools_down():
  opt = metaopt.safeguard(optax.sgd(0.1), fallback=optax.sgd(0.01), tolerance=0.5,
                          cooldown=2)
  params = {"x": jnp.ones(1)}
  state = opt.init(params)
  g = {"x": jnp.ones(1)}
  u1, state = opt.update(g, state, params, value=jnp.float32(1.0))
  np.testing.assert_allclose(u1["x"], [-0.1])
  # The loss after that step tripled (> 1 + 0.5 * 1): the step is undone.
  u2, state = opt.update(g, state, params, value=jnp.float32(3.0))
  np.testing.assert_allclose(u2["x"], [0.1])
  assert int(state.num_failures) == 1
  # Two cooldown steps on the fallback, then the rule again.
  u3, state = opt.update(g, state, params, value=jnp.float32(1.0))
  u4, state = opt.update(g, state, params, value=jnp.float32(0.9))
  u5, state = opt.update(g, state, params, value=jnp.float32(0.8))
  np.testing.assert_allclose([u3["x"][0], u4["x"][0], u5["x"][0]], [-0.01, -0.01, -0.1])


def test_rescues_a_rule_that_diverges_on_a_stiff_task():
  """A 'learned' step size tuned on gentle curvature (lr 0.05) diverges on curvature
  100 (|1 - 0.05 * 100| = 4 > 1); safeguarded, training still converges."""
  task = diag_quadratic((1.0, 100.0))
  rule = optax.sgd(0.05)
  alone = _run(rule, task, 60)
  assert alone.diverged or alone.train_loss[-1] > alone.train_loss[0]
  guarded_opt = metaopt.safeguard(rule, fallback=optax.adam(0.05), max_failures=2)
  guarded = _run(guarded_opt, task, 300)
  assert not guarded.diverged
  assert guarded.train_loss[-1] < 1e-2 * guarded.train_loss[0]


def test_permanent_fallback_after_max_failures_and_bad_arguments():
  opt = metaopt.safeguard(optax.sgd(1.0), fallback=optax.sgd(0.0), cooldown=0,
                          max_failures=1)
  params = {"x": jnp.ones(1)}
  state = opt.init(params)
  g = {"x": jnp.ones(1)}
  _, state = opt.update(g, state, params, value=jnp.float32(1.0))
  _, state = opt.update(g, state, params, value=jnp.float32(jnp.nan))  # fails
  for v in (1.0, 0.5):
    u, state = opt.update(g, state, params, value=jnp.float32(v))
    np.testing.assert_array_equal(u["x"], [0.0])  # sgd(0.0) for good
  assert bool(state.permanent)
  with pytest.raises(ValueError, match="tolerance > 0"):
    metaopt.safeguard(optax.sgd(1.0), tolerance=0.0)
