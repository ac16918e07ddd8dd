"""The ``general`` learned optimizer: its math against independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt as lopt_lib
from metaopt.lopt import general
from metaopt.lopt.mulo import mlp_param_info

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(4.0) / 7.0,
          "s": jnp.asarray(0.3)}


def grads_at(t):
  """A deterministic gradient sequence (different direction each step)."""
  return jax.tree_util.tree_map(lambda p: jnp.cos(3.0 * p + t) + 0.1 * t, PARAMS)


def run(opt, steps):
  """``steps`` updates on the fixed gradient sequence, in one jitted call."""

  @jax.jit
  def go():
    params, state, ups = PARAMS, opt.init(PARAMS), []
    for t in range(steps):
      u, state = opt.update(grads_at(t), state, params)
      params = optax.apply_updates(params, u)
      ups.append(u)
    return ups, state

  return go()


def test_without_controller_gain_it_is_adam_at_the_initial_step_size():
  """gain = 0 and zero-initialized networks: the rule is exactly optax.adam(init_lr)."""
  lo = lopt_lib.build("general", {"init_lr": 3e-3})
  theta = dict(lo.init_meta_params(jax.random.PRNGKey(0)), gain=jnp.asarray(0.0))
  ours, _ = run(lo.transform(theta), 5)
  ref, _ = run(optax.adam(3e-3, b1=0.9, b2=0.999, eps=1e-8), 5)
  for a, b in zip(ours, ref):
    for k in PARAMS:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-9)


def test_step_size_follows_the_hypergradient_cosine():
  """Two steps by hand (numpy): the log step size moves by D*tanh(gain*hbar/D) with
  hbar = 0.1*cos(g_2, a_1) per tensor, where a_1 is Adam's first direction."""
  lo = lopt_lib.build("general")
  c = lo.config
  theta = lo.init_meta_params(jax.random.PRNGKey(0))
  _, state = run(lo.transform(theta), 2)
  l0 = math.log(c.init_lr)
  for k in PARAMS:
    g1, g2 = np.asarray(grads_at(0)[k], np.float64), np.asarray(grads_at(1)[k], np.float64)
    m1, v1 = 0.1 * g1, 0.001 * g1**2
    a1 = (m1 / 0.1) / (np.sqrt(v1 / 0.001) + c.eps)
    h = np.sum(g2 * a1) / (np.linalg.norm(g2) * np.linalg.norm(a1) + c.eps)
    hbar = 0.1 * h
    expected = l0 + c.max_log_change * np.tanh(c.init_gain * hbar / c.max_log_change)
    np.testing.assert_allclose(float(state.log_lr[k]), expected, rtol=1e-5)


def test_step_size_grows_on_a_consistent_descent_and_stays_bounded():
  """On an ill-scaled linear slope the gradient never changes: the step size grows
  every step up to its bound max_lr."""
  lo = lopt_lib.build("general", {"max_lr": 0.05})
  opt = lo.transform(lo.init_meta_params(jax.random.PRNGKey(0)))
  params = {"x": jnp.zeros(5)}

  def step(carry, _):
    params, state = carry
    u, state = opt.update({"x": jnp.full(5, 1e-4)}, state, params)
    return (optax.apply_updates(params, u), state), jnp.exp(state.log_lr["x"])

  _, lrs = jax.jit(lambda c: jax.lax.scan(step, c, None, length=200))((params, opt.init(params)))
  lrs = [float(x) for x in lrs]
  assert all(b >= a for a, b in zip(lrs, lrs[1:]))
  assert lrs[-1] == pytest.approx(0.05, rel=1e-4)
  assert lrs[10] > 1e-3


def test_mup_variant_scales_hidden_steps_by_fan_in_and_needs_param_info():
  lo = lopt_lib.build("general", {"mup": True})
  theta = dict(lo.init_meta_params(jax.random.PRNGKey(0)), gain=jnp.asarray(0.0))
  params = {"l0": {"w": jnp.ones((3, 8))}, "l1": {"w": jnp.ones((8, 8))},
            "l2": {"w": jnp.ones((8, 2))}}
  with pytest.raises(ValueError, match="param_info"):
    lo.transform(theta)
  info = mlp_param_info(params, input="l0", output="l2")
  opt = lo.transform(theta, param_info=info)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  u, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  # Adam's first direction is sign(g) = 1: steps are init_lr * (1, 1/8, 1).
  np.testing.assert_allclose(u["l0"]["w"], -1e-3, rtol=1e-4)
  np.testing.assert_allclose(u["l1"]["w"], -1e-3 / 8, rtol=1e-4)
  np.testing.assert_allclose(u["l2"]["w"], -1e-3, rtol=1e-4)


def test_meta_gradient_reaches_every_meta_parameter():
  """Backprop through three steps reaches the controller and the per-parameter MLP
  (their last layers start at zero, so their gradients must come through them)."""
  lo = lopt_lib.build("general")
  theta = lo.init_meta_params(jax.random.PRNGKey(1))

  def loss(th):
    params, state = PARAMS, lo.transform(th).init(PARAMS)
    opt = lo.transform(th)
    for t in range(3):
      g = jax.grad(lambda p: sum(jnp.sum(jnp.sin(x) ** 2)
                                 for x in jax.tree_util.tree_leaves(p)))(params)
      u, state = opt.update(g, state, params)
      params = optax.apply_updates(params, u)
    return sum(jnp.sum(jnp.sin(x) ** 2) for x in jax.tree_util.tree_leaves(params))

  grads = jax.jit(jax.grad(loss))(theta)
  for name in ("log_lr0", "gain", "kind_log_scale"):
    assert np.any(np.asarray(grads[name]) != 0), name
  assert np.any(np.asarray(grads["controller"][-1]["w"]) != 0)
  assert np.any(np.asarray(grads["mlp"][-1]["w"]) != 0)
  assert np.isfinite(general.GeneralLOpt().flops_per_param())


def _quadratic_grad(params):
  """Gradient of 0.5 |x - 3|^2 over every entry (minimum 3 away from PARAMS)."""
  return jax.tree_util.tree_map(lambda p: p - 3.0, params)


def test_distance_estimate_matches_optax_prodigy_on_its_trajectory():
  """Fed the iterates and gradients of an optax prodigy run, the distance estimate
  D_t is prodigy's estimate after each step (the same weights lam_t, sums and max)."""
  lo = lopt_lib.build("general", {"distance_adapt": True, "init_lr": 1.0})
  c = lo.config
  ref_opt = optax.contrib.prodigy(1.0, estim_lr0=c.d0)
  params, ref_state = PARAMS, ref_opt.init(PARAMS)
  state = lo.transform(lo.init_meta_params(jax.random.PRNGKey(0))).init(PARAMS).distance
  treedef = jax.tree_util.tree_structure(PARAMS)
  ours, ref = [], []
  for t in range(40):
    g = _quadratic_grad(params)
    state = general._update_distance(c, state, treedef.flatten_up_to(g),
                                     treedef.flatten_up_to(params), treedef, jnp.float32(t + 1))
    u, ref_state = ref_opt.update(g, ref_state, params)
    params = optax.apply_updates(params, u)
    ours.append(float(state.d))
    ref.append(float(ref_state.estim_lr))
  assert ref[-1] > 1e4 * c.d0  # the reference estimate did grow
  np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_distance_adapt_finds_the_scale_and_is_bounded_by_the_distance_to_the_solution():
  """On f(x) = 0.5 |x - c x*|^2 from x_0 = 0 the same rule (no learning rate) solves
  the problem at scales c = 0.01, 1 and 100; D_t never exceeds |x_0 - x*|_inf = c; and
  D_0 is the only scale it has: with D_0 scaled by c too, the whole trajectory scales
  by c."""
  target = jnp.linspace(-1.0, 1.0, 16)

  def trajectory(scale, d0):
    lo = lopt_lib.build("general", {"distance_adapt": True, "init_lr": 1.0, "d0": d0})
    opt = lo.transform(lo.init_meta_params(jax.random.PRNGKey(0)))

    def step(carry, _):
      x, state = carry
      u, state = opt.update({"x": x["x"] - scale * target}, state, x)
      x = optax.apply_updates(x, u)
      return (x, state), (x["x"], state.distance.d)

    x0 = {"x": jnp.zeros(16)}
    return jax.jit(lambda: jax.lax.scan(step, (x0, opt.init(x0)), None, length=200)[1])()

  for scale in (0.01, 1.0, 100.0):
    xs, ds = trajectory(scale, 1e-6)
    assert float(jnp.max(ds)) <= scale * (1 + 1e-5)
    assert float(jnp.mean((xs[-1] / scale - target) ** 2)) < 1e-3, scale
  xs1, _ = trajectory(1.0, 1e-6)
  xs100, _ = trajectory(100.0, 1e-4)
  np.testing.assert_allclose(xs100 / 100.0, xs1, rtol=1e-3, atol=1e-5)
