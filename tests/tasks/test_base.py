"""Tests of the core task types (independent of any registered task)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import base


def _toy_family():
  """Quadratic family: dynamic config = the optimum, static = dimension."""

  def make_task(static, dynamic):
    dim = static

    def init(key):
      return {"x": jnp.zeros((dim,))}

    def loss(params, batch, key):
      del key
      return 0.5 * jnp.sum((params["x"] - dynamic - batch["shift"]) ** 2)

    def batch_fn(data, key, split):
      del data, split
      return {"shift": 0.01 * jax.random.normal(key, (dim,))}

    return base.Task("toy", init, loss, {}, batch_fn,
                     {"shift": jax.ShapeDtypeStruct((dim,), jnp.float32)},
                     base.log_normalizer(1.0))

  return base.TaskFamily(
      "toy_family", sample_static=lambda key: 3,
      sample_dynamic=lambda key, static: jax.random.normal(key, (static,)),
      make_task=make_task)


def test_make_normalizer_clips_nan_and_divergence():
  norm = base.make_normalizer(np.log(10.0), max_normalized_loss=1.5)
  np.testing.assert_allclose(norm(jnp.log(10.0)), 1.0, rtol=1e-6)
  assert float(norm(jnp.nan)) == 1.5
  assert float(norm(jnp.inf)) == 1.5
  assert float(norm(1e9)) == 1.5
  np.testing.assert_allclose(norm(0.5 * jnp.log(10.0)), 0.5, rtol=1e-6)


def test_log_normalizer_is_monotone_and_bounded():
  norm = base.log_normalizer(2.0)
  vals = [float(norm(v)) for v in (0.0, 0.5, 2.0, 10.0, 1e12)]
  assert vals[0] == 0.0 and vals[2] == pytest.approx(1.0)
  assert vals == sorted(vals) and vals[-1] == 1.5
  assert float(norm(jnp.nan)) == 1.5


def test_param_info_rejects_unknown_role():
  with pytest.raises(ValueError, match="role"):
    base.ParamInfo("embedding")


def test_family_sample_batch_vmaps_with_shared_static():
  family = _toy_family()
  cfg = family.sample_batch(jax.random.PRNGKey(0), 4)
  assert cfg.static == 3 and cfg.dynamic.shape == (4, 3)

  def loss_of(dynamic, key):
    task = family.make_task(cfg.static, dynamic)
    params = task.init(key)
    return task.loss(params, task.batch(task.data, key, "train"), key)

  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  losses = jax.jit(jax.vmap(loss_of))(cfg.dynamic, keys)
  expected = [loss_of(cfg.dynamic[i], keys[i]) for i in range(4)]
  np.testing.assert_allclose(losses, expected, rtol=1e-5)
  assert len(set(np.round(np.asarray(losses), 5))) == 4
  again = family.sample_batch(jax.random.PRNGKey(0), 4)
  np.testing.assert_array_equal(again.dynamic, cfg.dynamic)


def test_task_config_is_a_pytree_with_static_metadata():
  cfg = base.TaskConfig(static=5, dynamic={"a": jnp.ones(2)})
  leaves, treedef = jax.tree_util.tree_flatten(cfg)
  assert len(leaves) == 1
  assert jax.tree_util.tree_unflatten(treedef, leaves).static == 5


def test_batches_iterator_is_deterministic_and_checks_split():
  task = _toy_family().task(_toy_family().sample(jax.random.PRNGKey(0)))
  a = [next(task.batches("train", seed=3))["shift"] for _ in range(1)]
  b = [next(task.batches("train", seed=3))["shift"] for _ in range(1)]
  np.testing.assert_array_equal(a[0], b[0])
  with pytest.raises(ValueError, match="split"):
    next(task.batches("validation"))


def test_fixed_family_wraps_a_task():
  task = _toy_family().task(_toy_family().sample(jax.random.PRNGKey(0)))
  fam = base.fixed_family(task)
  assert fam.task(fam.sample_batch(jax.random.PRNGKey(0), 2)) is task
  assert base.num_params(base.abstract_params(task)) == 3
