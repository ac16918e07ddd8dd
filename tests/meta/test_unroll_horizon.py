"""The horizon contract in meta-training: every in-flight inner run's learned
optimizer is initialized with that run's own horizon (a traced value), and the
horizon's features are on during the unroll, as they are at evaluation."""

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import lopt
from metaopt.lopt.base import UNKNOWN_HORIZON
from metaopt.meta.truncation import TruncationSchedule
from metaopt.meta.unroll import InnerProblem, run_horizon
from tests.meta.helpers import quadratic_family

_TINY = {"lstm_hidden": 4, "num_mlps": 2, "mlp_hidden": 2}


def hypernet_problem(schedule):
  opt = lopt.build("hypernet", _TINY)
  theta = opt.init_meta_params(jax.random.PRNGKey(0))
  # A readout that reads the LSTM state, so that its inputs (the fraction of
  # training among them) move the step size.
  theta["heads"]["w_lr"] = jnp.ones_like(theta["heads"]["w_lr"])
  # Every task is the same quadratic from the same start: runs differ only by horizon.
  return InnerProblem(quadratic_family(fixed=True), None, opt, schedule), theta


def test_every_in_flight_run_gets_its_own_traced_horizon():
  problem, theta = hypernet_problem(TruncationSchedule("loguniform", 5, 400, min_horizon=5))
  states = jax.jit(problem.init_states, static_argnums=2)(theta, jax.random.PRNGKey(1), 6)
  horizons = np.asarray(states.opt_state.horizon)
  np.testing.assert_array_equal(horizons, np.asarray(states.horizon - states.step))
  assert len(set(horizons.tolist())) > 1 and (horizons >= 1).all()
  # Runs without an end (never_ending) get the documented unknown value.
  never, _ = hypernet_problem(TruncationSchedule("never_ending", 5))
  assert int(never.new_run(theta, jax.random.PRNGKey(2)).opt_state.horizon) == UNKNOWN_HORIZON
  assert int(run_horizon(jnp.asarray(50), jnp.asarray(20))) == 30


def test_horizon_reaches_the_features_during_the_unroll():
  """Two runs of one task from one start, differing only in their horizons, take
  different steps (identical ones when the horizon never reaches the rule)."""
  problem, theta = hypernet_problem(TruncationSchedule("constant", 5, 10,
                                                       random_offsets=False))
  thetas = jax.tree_util.tree_map(lambda x: x[None], theta)

  def after_unroll(horizon):
    run = problem.new_run(theta, jax.random.PRNGKey(3), horizon=horizon)
    run = jax.tree_util.tree_map(lambda x: x[None], run)
    new, out = problem.unroll(thetas, run, {}, jax.random.PRNGKey(4), 5)
    return new.params["x"][0], out.reset

  (short, long), reset = jax.jit(jax.vmap(after_unroll))(jnp.asarray([10, 1000]))
  assert not np.asarray(reset).any()
  assert np.all(np.isfinite(short)) and np.all(np.isfinite(long))
  assert np.abs(short - long).max() > 1e-6 * np.abs(short).max(), (short, long)


def test_meta_training_and_evaluation_see_the_same_rule():
  """A run of meta-training with horizon h steps as ``transform(θ, num_steps=h)``
  does at evaluation, whatever horizons the other in-flight runs have."""
  problem, theta = hypernet_problem(TruncationSchedule("constant", 5, 10,
                                                       random_offsets=False))
  thetas = jax.tree_util.tree_map(lambda x: x[None], theta)
  task = problem.task(problem.family.sample_dynamic(jax.random.PRNGKey(3), None))

  def in_meta_training(horizon):
    run = jax.tree_util.tree_map(lambda x: x[None], problem.new_run(
        theta, jax.random.PRNGKey(3), horizon=horizon))
    return problem.unroll(thetas, run, {}, jax.random.PRNGKey(4), 5)[0].params["x"][0]

  got = jax.jit(jax.vmap(in_meta_training))(jnp.asarray([10, 37]))
  for i, h in enumerate((10, 37)):
    opt = problem.lopt.transform(theta, num_steps=h)
    params = task.init(jax.random.PRNGKey(0))
    state = opt.init(params)
    for _ in range(5):
      loss, grads = jax.value_and_grad(task.loss)(params, {}, None)
      updates, state = opt.update(grads, state, params, value=loss)
      params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    np.testing.assert_allclose(got[i], params["x"], rtol=1e-5, atol=1e-7)

