"""Quadratic tasks: closed-form gradient, exact condition number, family vmapping."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import quadratic


@pytest.mark.parametrize("dim, cond", [(10, 10.0), (50, 1000.0)])
def test_condition_number_and_spectrum(dim, cond):
  a = np.asarray(quadratic.quadratic_matrix(dim, math.log(cond), jax.random.PRNGKey(3)),
                 np.float64)
  np.testing.assert_allclose(a, a.T)
  eig = np.linalg.eigvalsh(a)
  np.testing.assert_allclose(eig, np.geomspace(1.0, cond, dim), rtol=1e-3)
  np.testing.assert_allclose(np.linalg.cond(a), cond, rtol=1e-3)


def test_rotation_is_orthogonal():
  q = np.asarray(quadratic.random_rotation(jax.random.PRNGKey(0), 20), np.float64)
  np.testing.assert_allclose(q @ q.T, np.eye(20), atol=1e-5)


def test_gradient_matches_closed_form():
  dim, log_cond = 12, math.log(100.0)
  x_star = np.random.default_rng(1).normal(size=dim).astype(np.float32)
  task = quadratic.build_quadratic_task("q", dim, log_cond, 7, x_star)
  a = np.asarray(quadratic.quadratic_matrix(dim, log_cond,
                                            jax.random.fold_in(jax.random.PRNGKey(0), 7)),
                 np.float64)

  @jax.jit
  def run(key, x):
    batch = task.batch(task.data, key, "train")
    params = task.init(key)
    loss, grad = jax.value_and_grad(task.loss)(params, batch, key)
    return params["x"], batch["noise"], loss, grad["x"], task.loss({"x": x}, batch, key)

  x, noise, loss, grad, loss_at_star = run(jax.random.PRNGKey(2), x_star)
  np.testing.assert_array_equal(noise, 0.0)
  d = np.asarray(x, np.float64) - x_star
  np.testing.assert_allclose(grad, a @ d, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(loss, 0.5 * d @ a @ d, rtol=1e-5)
  assert float(loss_at_star) == pytest.approx(0.0, abs=1e-6)
  assert float(task.normalize_loss(0.0)) == 0.0


def test_noisy_gradient_is_unbiased_offset():
  task = quadratic.quadratic_task(8, 10.0, noise_std=0.5)
  exact = quadratic.quadratic_task(8, 10.0)
  assert task.name == "quadratic_d8_cond10_noise0.5"

  @jax.jit
  def run(key):
    params = exact.init(key)
    batch = task.batch(task.data, key, "train")
    g = jax.grad(task.loss)(params, batch, key)["x"]
    g0 = jax.grad(exact.loss)(params, exact.batch(exact.data, key, "train"), key)["x"]
    return g, g0, batch["noise"], task.batch(task.data, key, "test")["noise"]

  g, g0, noise, test_noise = run(jax.random.PRNGKey(1))
  np.testing.assert_allclose(g - g0, noise, rtol=1e-4, atol=1e-5)
  assert float(np.std(noise)) > 0.1
  assert not np.array_equal(noise, test_noise)
  np.testing.assert_array_equal(noise, run(jax.random.PRNGKey(1))[2])


def test_normalized_init_loss_near_one():
  task = quadratic.quadratic_task(50, 1000.0)
  normalized = jax.jit(jax.vmap(lambda k: task.normalize_loss(
      task.loss(task.init(k), task.batch(task.data, k, "train"), k))))(
          jax.random.split(jax.random.PRNGKey(0), 64))
  assert 0.7 < float(jnp.mean(normalized)) < 1.3


def test_family_vmaps_with_per_task_condition():
  fam = quadratic.quadratic_family(dims=(16,), max_cond=1e3)
  cfg = fam.sample_batch(jax.random.PRNGKey(0), 4)
  cfg2 = fam.sample_batch(jax.random.PRNGKey(0), 4)
  jax.tree.map(np.testing.assert_array_equal, cfg.dynamic, cfg2.dynamic)

  @jax.jit
  def run(dynamic, key):
    def one(dyn):
      task = fam.make_task(cfg.static, dyn)
      params = task.init(key)
      loss, grad = jax.value_and_grad(task.loss)(params, task.batch(task.data, key, "train"), key)
      a = quadratic.quadratic_matrix(
          cfg.static, dyn["log_cond"], jax.random.fold_in(jax.random.PRNGKey(0),
                                                          dyn["rotation_seed"]))
      return loss, grad["x"], jnp.linalg.cond(a)
    return jax.vmap(one)(dynamic)

  loss, grad, cond = run(cfg.dynamic, jax.random.PRNGKey(1))
  assert np.all(np.isfinite(loss)) and len(np.unique(np.asarray(loss))) == 4
  np.testing.assert_allclose(cond, np.exp(cfg.dynamic["log_cond"]), rtol=1e-2)


def test_bad_config_errors():
  with pytest.raises(ValueError, match="Condition number"):
    quadratic.quadratic_task(10, 0.5)
  with pytest.raises(ValueError, match="dimension"):
    quadratic.quadratic_task(0, 10.0)
