"""Classic test functions: known minima (value and zero gradient), init box, families."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import classic


@pytest.mark.parametrize("function, dim", [("rosenbrock", 2), ("rosenbrock", 7),
                                           ("rastrigin", 5), ("ackley", 5), ("beale", 2),
                                           ("booth", 2)])
def test_known_minimizer_value_and_gradient(function, dim):
  task = classic.classic_task(function, dim)
  f = classic.get_function(function)
  x_star = {"x": jnp.asarray(f.minimizer(dim), jnp.float32)}
  value, grad = jax.jit(jax.value_and_grad(task.loss))(x_star, {}, None)
  assert float(value) == pytest.approx(f.minimum, abs=1e-5)
  np.testing.assert_allclose(grad["x"], 0.0, atol=1e-4)
  # Nearby points are worse, and the gradient there matches finite differences.
  x = x_star["x"] + 0.05 * jax.random.normal(jax.random.PRNGKey(0), (dim,))
  assert float(task.loss({"x": x}, {}, None)) > f.minimum
  g = jax.grad(lambda v: task.loss({"x": v}, {}, None))(x)
  eps = 1e-3
  shifts = eps * np.eye(dim, dtype=np.float32)
  fn = jax.jit(jax.vmap(f.fn))
  fd = (np.asarray(fn(x + shifts), np.float64) - np.asarray(fn(x - shifts), np.float64)) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=2e-2, atol=2e-2)


def test_closed_form_values():
  # Independent hand-computed values.
  assert float(classic.rosenbrock(jnp.array([0.0, 0.0]))) == pytest.approx(1.0)
  assert float(classic.rosenbrock(jnp.array([-1.0, 1.0, 1.0]))) == pytest.approx(4.0 + 0 + 0)
  assert float(classic.booth(jnp.array([0.0, 0.0]))) == pytest.approx(74.0)
  assert float(classic.rastrigin(jnp.array([1.0, 0.0]))) == pytest.approx(1.0, abs=1e-5)
  assert float(classic.beale(jnp.array([0.0, 0.0]))) == pytest.approx(
      1.5 ** 2 + 2.25 ** 2 + 2.625 ** 2, rel=1e-6)


def test_init_in_box_and_normalizer():
  task = classic.classic_task("rastrigin", 10)

  @jax.jit
  def run(keys):
    xs = jax.vmap(lambda k: task.init(k)["x"])(keys)
    normalized = jax.vmap(lambda x: task.normalize_loss(task.loss({"x": x}, {}, None)))(xs)
    return xs, normalized, task.normalize_loss(task.loss({"x": jnp.zeros(10)}, {}, None))

  xs, normalized, at_min = run(jax.random.split(jax.random.PRNGKey(0), 128))
  assert float(jnp.max(jnp.abs(xs))) <= 5.12
  assert float(at_min) == 0.0
  assert 0.6 < float(jnp.mean(normalized)) < 1.4


def test_family_vmaps():
  fam = classic.classic_family("rosenbrock", 4)
  cfg = fam.sample_batch(jax.random.PRNGKey(0), 4)
  jax.tree.map(np.testing.assert_array_equal, cfg.dynamic,
               fam.sample_batch(jax.random.PRNGKey(0), 4).dynamic)

  @jax.jit
  def run(dynamic, key):
    def one(dyn):
      task = fam.make_task(cfg.static, dyn)
      params = task.init(key)
      return jax.value_and_grad(task.loss)(params, {}, key)[0], params["x"]
    return jax.vmap(one)(dynamic)

  loss, x = run(cfg.dynamic, jax.random.PRNGKey(0))
  assert np.all(np.isfinite(loss)) and len(np.unique(np.asarray(loss))) == 4
  assert np.all(np.abs(x) <= 2.0 * cfg.dynamic["init_scale"][:, None] + 1e-6)


def test_bad_config_errors():
  with pytest.raises(ValueError, match="Unknown classic function.*rosenbrock"):
    classic.classic_task("rosenbruck")
  with pytest.raises(ValueError, match="dimension 2 only"):
    classic.classic_task("beale", 3)
  with pytest.raises(ValueError, match="dim >= 2"):
    classic.classic_task("rosenbrock", 1)
