"""The ``celo2`` learned optimizer: Newton-Schulz against independent references, the
routing, descent at the initial θ, the horizon (schedule, fraction features, traced
under jit/vmap) and θ as a differentiable argument."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt as lopt_lib
from metaopt.lopt import celo2
from tasks.base import ParamInfo
from tests.lopt import _lopt_b_utils as utils


def _opt(**config):
  opt_def = lopt_lib.build("celo2", config)
  return opt_def, opt_def.init_meta_params(jax.random.PRNGKey(0))


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (16, 16)])
def test_newton_schulz_matches_optax_muon_and_the_polar_factor(shape):
  x = jax.random.normal(jax.random.PRNGKey(3), shape)
  o = np.asarray(jax.jit(celo2.newton_schulz)(x), np.float64)
  # optax.contrib.muon without momentum: its update is NS_5(g) up to Muon's scale.
  # Compared at unit Frobenius norm (the scale is Muon's choice; the band below checks ours).
  muon = optax.contrib.scale_by_muon(beta=0.0, nesterov=False)
  ref = np.asarray(muon.update(x, muon.init(x))[0], np.float64)
  np.testing.assert_allclose(o / np.linalg.norm(o), ref / np.linalg.norm(ref), rtol=2e-4,
                             atol=2e-5)
  # The SVD: same singular vectors as x (U^T O V diagonal), singular values in the
  # iteration's known band, so O is the polar factor U V^T to that tolerance.
  u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  core = u.T @ o @ vt.T
  sv = np.diag(core)
  assert np.all(sv > 0.68) and np.all(sv < 1.22), sv
  np.testing.assert_allclose(core - np.diag(sv), 0.0, atol=1e-4)
  assert np.linalg.norm(o - u @ vt) / np.linalg.norm(u @ vt) < 0.3
  np.testing.assert_allclose(np.linalg.svd(o, compute_uv=False), np.sort(sv)[::-1], rtol=1e-4)


@pytest.mark.parametrize("shape", [(12, 40), (50, 8)])
def test_the_gram_form_is_the_direct_iteration(shape):
  x = jax.random.normal(jax.random.PRNGKey(4), shape) * jnp.logspace(0, -3, shape[1])
  direct = celo2.newton_schulz(x, gram=False)
  np.testing.assert_allclose(celo2.newton_schulz(x, gram=True), direct, rtol=1e-3, atol=2e-5)


def test_newton_schulz_of_zero_is_zero():
  np.testing.assert_array_equal(celo2.newton_schulz(jnp.zeros((3, 5))), np.zeros((3, 5)))


PARAMS = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 8)), "b": jnp.ones((8,)),
          "s": jnp.ones(()), "conv": jnp.ones((3, 3, 2, 4)), "head": jnp.ones((8, 1)),
          "out": jnp.ones((8, 3))}


def test_routing_by_shape_name_and_role():
  names = sorted(PARAMS)  # dict leaves flatten in key order
  hidden = dict(zip(names, celo2.orthogonalized_leaves(PARAMS, None, "embed")))
  assert {k for k, v in hidden.items() if v} == {"w", "out"}
  info = {"embed": ParamInfo("input", 10, 4), "w": ParamInfo("hidden", 4, 8),
          "b": ParamInfo("bias", 1, 8), "s": ParamInfo("scalar"),
          "conv": ParamInfo("hidden", 18, 4), "head": ParamInfo("output", 8, 1),
          "out": ParamInfo("output", 8, 3)}
  hidden = dict(zip(names, celo2.orthogonalized_leaves(PARAMS, info, "")))
  assert {k for k, v in hidden.items() if v} == {"w"}
  # The state follows the routing: momenta/factored statistics only for "w".
  opt_def, theta = _opt()
  state = opt_def.transform(theta, param_info=info).init(PARAMS)
  kinds = {k: sorted(s) for k, s in zip(names, state.leaves)}
  assert kinds["w"] == ["col", "mu", "nu", "row"]
  assert all(kinds[k] == ["m", "v"] for k in names if k != "w")


def test_adam_path_is_optax_adam_and_hidden_matrices_are_orthogonalized():
  """Without a horizon (constant schedule) and weight decay, the vector follows
  optax.adam(lr) exactly; the matrix step is lr * 0.2 * sqrt(max(r, c)) * NS_5(D)."""
  opt_def, theta = _opt()
  theta = dict(theta, log_weight_decay=jnp.asarray(-80.0))
  params = {"w": jax.random.normal(jax.random.PRNGKey(1), (6, 9)),
            "b": jnp.linspace(-1.0, 1.0, 9)}
  loss = lambda p: jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.sum(p["b"] ** 4)  # noqa: E731
  ours = opt_def.transform(theta)
  ref = optax.adam(1e-3)
  s, r, p = ours.init(params), ref.init(params), params
  for _ in range(4):
    g = jax.grad(loss)(p)
    u, s = ours.update(g, s, p)
    ur, r = ref.update(g, r, p)
    np.testing.assert_allclose(u["b"], ur["b"], rtol=1e-5, atol=1e-10)
    sv = np.linalg.svd(np.asarray(u["w"]) / (-1e-3 * 0.2 * 3.0), compute_uv=False)
    assert np.all(sv > 0.68) and np.all(sv < 1.22), sv
    p = optax.apply_updates(p, u)


def _mlp_problem():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
  x = jax.random.normal(k1, (64, 8))
  y = jnp.sin(x[:, :2])
  params = {"w1": jax.random.normal(k2, (8, 32)) / np.sqrt(8), "b1": jnp.zeros(32),
            "w2": jax.random.normal(k3, (32, 2)) / np.sqrt(32), "b2": jnp.zeros(2)}

  def loss(p):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)
  return params, loss


@pytest.mark.parametrize("num_steps", [None, 50])
def test_initial_theta_decreases_a_quadratic_and_a_small_mlp(num_steps):
  opt_def, theta = _opt()
  opt = opt_def.transform(theta, num_steps=num_steps)
  q0 = float(utils.quadratic_loss(utils.quadratic_params()))
  traj = utils.run_steps(opt, utils.quadratic_params(), 50)
  q = [float(utils.quadratic_loss(jax.tree_util.tree_map(lambda x: x[i], traj)))
       for i in range(50)]
  assert q[-1] < 0.99 * q0 and all(np.isfinite(q)) and np.all(np.diff(q) <= 0)
  params, loss = _mlp_problem()
  traj = utils.run_steps(opt, params, 50, loss)
  final = jax.tree_util.tree_map(lambda x: x[-1], traj)
  assert float(loss(final)) < 0.9 * float(loss(params))


def test_schedule_warmup_cosine_to_the_horizon_and_constant_without_one():
  sched = jax.jit(lambda t, h: celo2.schedule(t, h, 0.05, 0.0))
  np.testing.assert_allclose(sched(1, 100), 0.2, rtol=1e-6)
  np.testing.assert_allclose(sched(5, 100), 1.0, rtol=1e-6)
  np.testing.assert_allclose(sched(52, 100), 0.5 * (1 + np.cos(np.pi * 47 / 95)), rtol=1e-5)
  np.testing.assert_allclose(sched(100, 100), 0.0, atol=1e-7)
  np.testing.assert_allclose(sched(500, 100), 0.0, atol=1e-7)
  for t in (1, 50, 10_000):
    assert float(sched(t, 0)) == 1.0


def _first_updates(opt_def, theta, horizons, steps=2):
  params = utils.quadratic_params()
  grads = jax.grad(utils.quadratic_loss)(params)

  def run(horizon):
    opt = opt_def.transform(theta, num_steps=horizon)
    state = opt.init(params)
    for _ in range(steps):
      u, state = opt.update(grads, state, params)
    return u, state.horizon
  return jax.jit(jax.vmap(run))(jnp.asarray(horizons)), run


def test_a_traced_horizon_reaches_the_schedule_and_the_fraction_features():
  opt_def, theta = _opt()
  (u, h), run = _first_updates(opt_def, theta, [4, 400, 0])
  np.testing.assert_array_equal(h, [4, 400, 0])
  assert not np.allclose(u["w"][0], u["w"][1]) and not np.allclose(u["w"][1], u["w"][2])
  for i, static in ((0, 4), (1, 400), (2, None)):
    got = jax.jit(lambda s=static: run(s)[0])()
    np.testing.assert_allclose(u["w"][i], got["w"], rtol=1e-5, atol=1e-9)
  # The fraction features reach the network: with a non-zero last layer the matrix
  # *direction* (the schedule only scales it) depends on the horizon.
  unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
  np.testing.assert_allclose(unit(u["w"][1]), unit(u["w"][2]), rtol=1e-4, atol=1e-6)
  layers = list(theta["mlp"])
  layers[-1] = dict(layers[-1], w=jax.random.normal(jax.random.PRNGKey(7), layers[-1]["w"].shape))
  theta2 = dict(theta, mlp=tuple(layers))
  (u2, _), _ = _first_updates(opt_def, theta2, [400, 0])
  assert not np.allclose(unit(u2["w"][0]), unit(u2["w"][1]), rtol=1e-3, atol=1e-5)


def test_theta_is_a_differentiable_argument():
  """jax.grad of a 3-step unrolled loss (a lax.scan) w.r.t. θ is finite and reaches every
  meta-parameter (the MLP's hidden layers once its last layer is non-zero)."""
  opt_def, theta = _opt()
  layers = list(theta["mlp"])
  layers[-1] = dict(layers[-1], w=0.1 * jnp.ones_like(layers[-1]["w"]))
  theta = dict(theta, mlp=tuple(layers))
  grad = jax.jit(jax.grad(lambda th: utils.unroll_loss(opt_def, th, steps=3,
                                                       num_steps=100)))(theta)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(grad))
  for key in ("log_lr", "log_weight_decay", "log_adam_scale", "skip", "mlp"):
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree_util.tree_leaves(grad[key])), key
  assert np.any(np.asarray(grad["mlp"][0]["w"]) != 0)


def test_save_load_round_trip(tmp_path):
  opt_def, theta = _opt(hidden_sizes=(4,), momentum_decays=(0.9, 0.99))
  utils.check_io_round_trip(opt_def, theta, str(tmp_path / "celo2.safetensors"))
