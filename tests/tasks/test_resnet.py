"""The residual BatchNorm net: model state updated by training steps (checked against
the batch statistics computed by hand), read by evaluation, carried by the inner loop,
and timed by the leaderboard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import inner
from metaopt.eval import entrants, runner
from tasks import common, resnet


def _task():
  data = common.synthetic_image_data(seed=0, n=64, shape=(8, 8, 1))
  return resnet.resnet_task("synthetic", channels=(4, 8), blocks=1, batch_size=8,
                            name="test_resnet", data=data)


def test_training_updates_the_running_statistics_by_hand():
  task = _task()
  params = task.init(jax.random.PRNGKey(0))
  state = task.init_state(None)
  batch = task.batch(task.data, jax.random.PRNGKey(1), "train")
  _, new_state = task.loss_with_state(params, state, batch, None, True)
  # The stem's statistics: momentum 0.9 toward the batch mean / variance of its conv.
  y = resnet._conv(batch["image"], params["stem"]["w"], 2)  # pylint: disable=protected-access
  np.testing.assert_allclose(new_state["stem"]["mean"], 0.1 * jnp.mean(y, axis=(0, 1, 2)),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_state["stem"]["var"],
                             0.9 + 0.1 * jnp.var(y, axis=(0, 1, 2)), rtol=1e-5)
  # Evaluation reads the state and leaves it unchanged.
  _, same = task.loss_with_state(params, new_state, batch, None, False)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, same, new_state))


def test_the_inner_loop_carries_the_state_and_evaluates_deterministically():
  task = _task()
  carry, losses, valid = jax.jit(
      lambda d: inner.run(task, optax.adam(1e-2), 0, d, 20, 10))(task.data)
  assert len(carry) == 3 and np.all(np.isfinite(losses)) and valid.shape == (2,)
  moved = carry[2]["s1_b0_conv1"]["mean"]
  assert float(jnp.max(jnp.abs(moved))) > 0  # Training moved the running mean.
  again = jax.jit(lambda d: inner.run(task, optax.adam(1e-2), 0, d, 20, 10))(task.data)
  np.testing.assert_array_equal(valid, again[2])


def test_the_leaderboard_times_a_stateful_task():
  task = _task()
  e = entrants.baseline("adam")
  secs = runner.time_steps(task, e, e.fixed_config(20), 20, steps=4, repeats=2)
  assert len(secs) == 2 and min(secs) > 0


def test_train_runs_a_stateful_task_like_the_inner_loop():
  """``metaopt.train.train`` (the ``metaopt train`` driver) carries the model state: its
  curves equal ``inner.run``'s."""
  from metaopt.train import train  # pylint: disable=import-outside-toplevel
  task = _task()
  res = train(task, optax.adam(1e-2), 20, seed=0, eval_every=10)
  _, losses, valid = jax.jit(
      lambda d: inner.run(task, optax.adam(1e-2), 0, d, 20, 10))(task.data)
  np.testing.assert_allclose(res.train_loss, losses, rtol=1e-5)
  np.testing.assert_allclose(res.valid_loss, valid, rtol=1e-5)
