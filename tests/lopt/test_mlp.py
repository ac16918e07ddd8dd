"""Per-parameter MLP learned optimizer: a reduction to a known rule, jit/vmap/grad."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from metaopt.lopt import features as F
from metaopt.lopt import mlp


def _select_column_theta(opt, column, magnitude_bias):
  """theta whose MLP outputs direction = input[column], magnitude = magnitude_bias
  (relu(x) - relu(-x) = x through the two hidden layers)."""
  n_in, h1, h2, _ = opt.layer_sizes
  w0 = np.zeros((n_in, h1), np.float32)
  w0[column, 0], w0[column, 1] = 1.0, -1.0
  w1 = np.zeros((h1, h2), np.float32)
  w1[0, 0] = w1[1, 1] = 1.0
  w2 = np.zeros((h2, 2), np.float32)
  w2[0, 0], w2[1, 0] = 1.0, -1.0
  b2 = np.array([0.0, magnitude_bias], np.float32)
  zeros = lambda n: np.zeros((n,), np.float32)
  return {"layers": ({"w": w0, "b": zeros(h1)}, {"w": w1, "b": zeros(h2)},
                     {"w": w2, "b": b2})}


def test_reduces_to_normalized_momentum_sgd():
  """Selecting the momentum-0.9 column gives update = -step_mult * exp(b * exp_mult)
  * m / sqrt(mean(m^2) + eps) per tensor: checked against numpy over 4 steps."""
  opt = lopt.build("mlp", {})
  cols = F.columns(F.get(opt.config.features), lambda: mlp._example_context(opt.config))
  col = cols["momenta"].start + opt.config.momentum_decays.index(0.9)
  theta = _select_column_theta(opt, col, magnitude_bias=500.0)
  tx = opt.transform(theta)
  rng = np.random.RandomState(1)
  params = {"w": rng.randn(4, 3).astype(np.float32), "b": rng.randn(3).astype(np.float32)}
  state = tx.init(params)
  m_ref = {k: np.zeros_like(v, np.float64) for k, v in params.items()}
  update = jax.jit(tx.update)
  for _ in range(4):
    grads = {k: rng.randn(*v.shape).astype(np.float32) for k, v in params.items()}
    updates, state = update(grads, state, params)
    for k in params:
      m_ref[k] = 0.9 * m_ref[k] + 0.1 * grads[k]
      expected = -1e-3 * np.exp(0.5) * m_ref[k] / np.sqrt(np.mean(m_ref[k] ** 2) + F.NORM_EPS)
      np.testing.assert_allclose(updates[k], expected, rtol=1e-4, atol=1e-9)
    params = optax.apply_updates(params, updates)


def test_optax_contract_value_optional_and_dtypes():
  opt = lopt.build("mlp", {"hidden_sizes": [8]})
  assert opt.config.hidden_sizes == (8,)
  theta = opt.init_meta_params(jax.random.PRNGKey(0))
  tx = opt.transform(theta, num_steps=None)
  assert isinstance(tx, optax.GradientTransformationExtraArgs)
  params = {"s": jnp.float32(1.0), "h": jnp.ones((5,), jnp.bfloat16), "w": jnp.ones((2, 3))}
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params)
  state = tx.init(params)
  u1, _ = jax.jit(tx.update)(grads, state, params)
  u2, s2 = jax.jit(tx.update)(grads, state, params, value=jnp.float32(3.0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, u1, u2)
  assert u1["s"].shape == () and u1["h"].dtype == jnp.bfloat16 and int(s2.count) == 1
  assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree_util.tree_leaves(u1))
  with pytest.raises(ValueError, match="params"):
    tx.update(grads, state)


def test_same_key_same_theta_and_vmap_over_theta():
  opt = lopt.build("mlp", {"hidden_sizes": [8, 8]})
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  # theta depends on the key only: a separately built optimizer gives the same theta for
  # the same key, and another key gives another theta.
  same = lopt.build("mlp", {"hidden_sizes": [8, 8]}).init_meta_params(keys[0])
  jax.tree_util.tree_map(np.testing.assert_array_equal, opt.init_meta_params(keys[0]), same)
  assert not np.allclose(opt.init_meta_params(keys[1])["layers"][0]["w"],
                         same["layers"][0]["w"])
  thetas = jax.vmap(opt.init_meta_params)(keys)
  params = {"w": jnp.linspace(-1, 1, 12).reshape(3, 4)}
  grads = {"w": jnp.cos(params["w"])}

  def one(theta):
    tx = opt.transform(theta)
    return tx.update(grads, tx.init(params), params)[0]["w"]

  batched = jax.jit(jax.vmap(one))(thetas)
  for i in range(3):
    single = jax.jit(one)(jax.tree_util.tree_map(lambda x: x[i], thetas))
    np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-9)


def _unrolled_loss(opt, theta, steps=3):
  """Quadratic loss after ``steps`` updates of the learned optimizer."""
  scales = jnp.array([[1.0, 2.0, 0.5], [3.0, 0.1, 1.5]], theta["layers"][0]["w"].dtype)
  loss = lambda p: 0.5 * jnp.sum(scales * p["w"] ** 2) + jnp.sum(p["b"] ** 2)
  params = {"w": jnp.ones_like(scales), "b": jnp.full((3,), 0.5, scales.dtype)}
  tx = opt.transform(theta)
  state = tx.init(params)
  for _ in range(steps):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params, value=value)
    params = optax.apply_updates(params, updates)
  return loss(params)


def test_meta_gradient_matches_finite_differences():
  # Larger step_mult so that the loss depends visibly on theta.
  opt = lopt.build("mlp", {"hidden_sizes": [16, 16], "step_mult": 0.1})
  with jax.enable_x64(True):
    theta = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                   opt.init_meta_params(jax.random.PRNGKey(0)))
    direction = jax.tree_util.tree_map(
        lambda x: jax.random.normal(jax.random.PRNGKey(1), x.shape, jnp.float64), theta)
    grad = jax.jit(jax.grad(lambda t: _unrolled_loss(opt, t)))(theta)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(grad),
                                                   jax.tree_util.tree_leaves(direction)))
    eps = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda t, d: t + s * d, theta, direction)
    loss = jax.jit(lambda t: _unrolled_loss(opt, t))
    numeric = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
    assert abs(float(analytic)) > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-5)


def test_bad_feature_name_in_config():
  opt = lopt.build("mlp", {"features": ["grad", "momenta_rsqrt"]})
  with pytest.raises(KeyError, match="Unknown feature 'momenta_rsqrt'"):
    opt.transform(opt.init_meta_params(jax.random.PRNGKey(0)))


def test_fused_and_matmul_paths_agree(monkeypatch):
  """The elementwise-unrolled network (small MLPs) and the matmul path (normalization
  folded into the first layer) compute the same updates and meta-gradients."""
  opt = lopt.build("mlp", {"hidden_sizes": [4, 4]})
  theta = opt.init_meta_params(jax.random.PRNGKey(5))
  params = {"w": jnp.linspace(-1, 1, 20).reshape(4, 5), "b": jnp.ones((5,)), "s": jnp.float32(2)}
  grads = jax.tree_util.tree_map(lambda p: jnp.cos(3 * p) + 0.1, params)

  def updates():
    tx = opt.transform(theta)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)
    return tx.update(grads, state, params)[0]

  def meta_grad():
    def f(theta):
      tx = opt.transform(theta)
      u = tx.update(grads, tx.init(params), params)[0]
      return sum(jnp.sum(jnp.sin(x * 1e3)) for x in jax.tree_util.tree_leaves(u))
    return jax.grad(f)(theta)

  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  monkeypatch.setattr(mlp, "FUSE_MAX_MACS", 10 ** 6)
  fused, fused_grad = updates(), meta_grad()
  monkeypatch.setattr(mlp, "FUSE_MAX_MACS", 0)
  matmul, matmul_grad = updates(), meta_grad()
  jax.tree_util.tree_map(close, fused, matmul)
  jax.tree_util.tree_map(close, fused_grad, matmul_grad)
