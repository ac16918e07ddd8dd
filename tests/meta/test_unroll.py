"""Truncation schedules and inner unrolls: horizons, offsets, restarts, meta-loss weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.meta.truncation import NEVER, TruncationSchedule
from metaopt.meta.unroll import InnerProblem
from tests.meta.helpers import LrMomentum, quadratic_family


def test_schedules_sample_valid_horizons_and_offsets():
  keys = jax.random.split(jax.random.PRNGKey(0), 500)
  log = TruncationSchedule("loguniform", 10, 1000, min_horizon=5)
  h = np.asarray(jax.vmap(log.sample_horizon)(keys))
  assert h.min() >= 10 and h.max() <= 1000  # min raised to the truncation length
  assert np.mean(h < 100) > 0.3 and np.mean(h > 300) > 0.1  # spread over decades
  offsets = np.asarray(jax.vmap(log.initial_step)(keys, jnp.asarray(h)))
  assert (offsets >= 0).all() and (offsets < h).all() and len(set(offsets)) > 100
  const = TruncationSchedule("constant", 10, 50, random_offsets=False)
  assert int(const.sample_horizon(keys[0])) == 50 and int(const.initial_step(keys[0], 50)) == 0
  assert int(TruncationSchedule("never_ending", 10).sample_horizon(keys[0])) == NEVER
  with pytest.raises(ValueError, match="horizon"):
    TruncationSchedule("constant", 20, 10)
  with pytest.raises(ValueError, match="schedule"):
    TruncationSchedule("linear")


def make_problem(horizon, meta_loss="train", kind="constant"):
  lopt = LrMomentum()
  problem = InnerProblem(quadratic_family(fixed=False), None, lopt,
                         TruncationSchedule(kind, 5, horizon, random_offsets=False), meta_loss)
  theta = lopt.init_meta_params(None)
  return problem, jax.tree_util.tree_map(lambda x: x[None], theta)


def test_unroll_restarts_at_the_horizon_with_a_new_task():
  problem, thetas = make_problem(7)
  first = problem.new_run(jax.tree_util.tree_map(lambda x: x[0], thetas), jax.random.PRNGKey(0))
  group = jax.tree_util.tree_map(lambda x: x[None], first)
  new, out = problem.unroll(thetas, group, {}, jax.random.PRNGKey(1), 10)
  np.testing.assert_array_equal(np.asarray(out.reset), np.arange(1, 11) == 7)
  assert int(new.step[0]) == 3  # 3 steps into the second run
  assert float(new.dynamic[0]) != float(first.dynamic)  # a new task config was drawn
  # Loss falls within a run and jumps back up at the restart (fresh params).
  loss = np.asarray(out.loss[:, 0])
  assert loss[6] < loss[0] and loss[7] > loss[6]


def test_never_ending_runs_do_not_restart():
  problem, thetas = make_problem(10, kind="never_ending")
  run = problem.new_run(jax.tree_util.tree_map(lambda x: x[0], thetas), jax.random.PRNGKey(0))
  _, out = problem.unroll(thetas, jax.tree_util.tree_map(lambda x: x[None], run), {},
                          jax.random.PRNGKey(1), 30)
  assert not np.asarray(out.reset).any()


def test_meta_loss_weights():
  assert np.allclose(make_problem(10, "train")[0].weights(4), 0.25)
  np.testing.assert_array_equal(make_problem(10, "final")[0].weights(4), [0, 0, 0, 1])
  problem, thetas = make_problem(10, "valid")
  run = problem.new_run(jax.tree_util.tree_map(lambda x: x[0], thetas), jax.random.PRNGKey(0))
  _, out = problem.unroll(thetas, jax.tree_util.tree_map(lambda x: x[None], run), {},
                          jax.random.PRNGKey(1), 3)
  # "valid" measures the loss after each update: the next step's training loss here
  # (the quadratic has no data, so every split is the same problem).
  np.testing.assert_allclose(out.meta_loss[:-1, 0], out.loss[1:, 0], rtol=1e-6)
