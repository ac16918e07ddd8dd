"""Tests of the math-structured learned rule (metaopt/lopt/math_l2o.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from tests.lopt import _lopt_b_utils as utils

_RNG = np.random.default_rng(0)
_A = _RNG.normal(size=(12, 20)) / np.sqrt(12)
_B = _RNG.normal(size=(12,))
_LR = 1.0 / np.linalg.eigvalsh(_A.T @ _A).max()


def _lasso_smooth(params):
  r = jnp.asarray(_A, params["x"].dtype) @ params["x"] - jnp.asarray(_B, params["x"].dtype)
  return 0.5 * jnp.sum(r ** 2)


def _constant_theta(opt_def, z_p=0.0, z_b=0.0, z_a=0.0):
  """θ whose readout ignores the network: (z_P, z_b, z_a) constant on every coordinate."""
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  theta["readout"] = {"w": jnp.zeros_like(theta["readout"]["w"]),
                      "b": jnp.array([z_p, z_b, z_a], jnp.float32)}
  return theta


def _np_prox_grad(x0, steps, lr, lam, beta=0.0, accel=None):
  """Accelerated proximal gradient for 0.5||Ax-b||^2 + lam ||x||_1, in numpy.

  x_{k+1} = soft(y_k - lr * A^T(A y_k - b) - beta * (y_k - y_{k-1}), lam * lr)
  y_{k+1} = x_{k+1} + accel * (x_{k+1} - x_k)   (y = x when accel is None)
  Returns the iterates y_1..y_steps (what the optimizer's params become).
  """
  x = y = y_prev = np.asarray(x0, np.float64)
  out = []
  for _ in range(steps):
    v = y - lr * _A.T @ (_A @ y - _B) - beta * (y - y_prev)
    x_new = np.sign(v) * np.maximum(np.abs(v) - lam * lr, 0.0)
    y_new = x_new if accel is None else x_new + accel * (x_new - x)
    x, y_prev, y = x_new, y, y_new
    out.append(y)
  return np.stack(out)


def test_registered_and_input_width_derived_from_features():
  assert "math_l2o" in lopt.arch_names()
  assert lopt.build("math_l2o").num_inputs() == 6
  assert lopt.build("math_l2o", {"features": ["grad"]}).num_inputs() == 2


@pytest.mark.parametrize("bad, match", [
    ({"net": "gru"}, "unknown net"),
    ({"features": ["gradient"]}, "Did you mean grad"),
    ({"features": []}, "features is empty"),
    ({"l1_strength": -1.0}, "l1_strength"),
    ({"lr": 0.0}, "lr > 0"),
    ({"learning_rate": 0.1}, "known fields"),
])
def test_bad_config_is_rejected(bad, match):
  with pytest.raises(ValueError, match=match):
    lopt.build("math_l2o", bad)


@pytest.mark.parametrize("net", ["lstm", "mlp"])
def test_smooth_mode_reduces_to_sgd(net):
  """P = lr I, b = 0, no acceleration: the rule is optax.sgd(lr) step for step."""
  lr = 0.05
  opt_def = lopt.build("math_l2o", {"net": net, "lr": lr, "acceleration": False, "hidden": 6})
  theta = _constant_theta(opt_def)
  ours = utils.run_steps(opt_def.transform(theta), utils.quadratic_params(), 6)
  ref = utils.run_steps(optax.sgd(lr), utils.quadratic_params(), 6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         ours, ref)


def test_composite_mode_reduces_to_ista():
  lam = 0.1
  opt_def = lopt.build("math_l2o", {"lr": _LR, "acceleration": False, "l1_strength": lam,
                                    "hidden": 6})
  x0 = {"x": jnp.asarray(_RNG.normal(size=20), jnp.float32)}
  ours = utils.run_steps(opt_def.transform(_constant_theta(opt_def)), x0, 10, _lasso_smooth)
  ref = _np_prox_grad(np.asarray(x0["x"]), 10, _LR, lam)
  np.testing.assert_allclose(np.asarray(ours["x"]), ref, rtol=1e-4, atol=1e-5)
  assert np.sum(ref[-1] == 0) > 0 and np.all(np.asarray(ours["x"])[-1][ref[-1] == 0] == 0)


def test_constant_preconditioner_bias_and_acceleration_match_numpy():
  """Non-zero constant outputs exercise the P, b and a paths against numpy."""
  lam, z_p, z_b, z_a = 0.05, 0.4, -0.7, -0.3
  opt_def = lopt.build("math_l2o", {"lr": 0.5 * _LR, "l1_strength": lam, "bias_scale": 0.5,
                                    "net": "mlp", "hidden": 6})
  x0 = {"x": jnp.asarray(_RNG.normal(size=20), jnp.float32)}
  ours = utils.run_steps(opt_def.transform(_constant_theta(opt_def, z_p, z_b, z_a)), x0, 8,
                         _lasso_smooth)
  sig = lambda v: 1.0 / (1.0 + np.exp(-v))
  ref = _np_prox_grad(np.asarray(x0["x"]), 8, 0.5 * _LR * 2 * sig(z_p), lam,
                      beta=0.5 * np.tanh(z_b), accel=sig(z_a))
  np.testing.assert_allclose(np.asarray(ours["x"]), ref, rtol=1e-4, atol=1e-5)


def test_jit_vmap_over_tasks_with_shared_theta():
  opt_def = lopt.build("math_l2o", {"hidden": 6, "l1_strength": 0.01})
  opt = opt_def.transform(opt_def.init_meta_params(jax.random.PRNGKey(1)))
  xs = {"x": jnp.asarray(_RNG.normal(size=(3, 20)), jnp.float32)}

  def run(p):
    state = opt.init(p)
    for _ in range(2):
      u, state = opt.update(jax.grad(_lasso_smooth)(p), state, p)
      p = optax.apply_updates(p, u)
    return p

  batched = jax.jit(jax.vmap(run))(xs)
  single = jax.jit(run)({"x": xs["x"][2]})
  np.testing.assert_allclose(batched["x"][2], single["x"], rtol=1e-5, atol=1e-6)


def test_meta_gradient_matches_finite_differences():
  opt_def = lopt.build("math_l2o", {"hidden": 4, "num_layers": 1, "lr": 0.1})
  utils.check_meta_grad_matches_fd(opt_def, jax.random.PRNGKey(2), steps=3)


@pytest.mark.slow  # behaviour beyond the required checks; keeps the default run short
def test_composite_meta_gradient_is_finite_and_descends_without_value():
  opt_def = lopt.build("math_l2o", {"hidden": 4, "num_layers": 1, "lr": _LR, "l1_strength": 0.1})
  theta = opt_def.init_meta_params(jax.random.PRNGKey(3))
  x0 = {"x": jnp.asarray(_RNG.normal(size=20), jnp.float32)}

  def objective(th):
    traj = utils.run_steps(opt_def.transform(th), x0, 10, _lasso_smooth)
    final = traj["x"][-1]
    return _lasso_smooth({"x": final}) + 0.1 * jnp.sum(jnp.abs(final))

  value, grad = jax.jit(jax.value_and_grad(objective))(theta)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grad))
  start = float(_lasso_smooth(x0) + 0.1 * jnp.sum(jnp.abs(x0["x"])))
  assert float(value) < 0.5 * start


def test_save_load_round_trip(tmp_path):
  opt_def = lopt.build("math_l2o", {"hidden": 5, "num_layers": 1, "features": ("grad", "iterate"),
                                    "l1_strength": 0.01})
  theta = opt_def.init_meta_params(jax.random.PRNGKey(7))
  utils.check_io_round_trip(opt_def, theta, tmp_path / "math_l2o.safetensors")
