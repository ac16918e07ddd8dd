"""Shared checks for the learned optimizers of tests/lopt/test_{hypernet,lstm,math_l2o}.py."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax


def quadratic_params():
  """Two tensors (a matrix and a vector) so per-tensor logic sees more than one leaf."""
  return {"w": jnp.array([[0.5, -1.0, 0.3], [0.2, 0.8, -0.4]]), "b": jnp.array([1.0, -2.0])}


def quadratic_loss(params):
  """A fixed, ill-conditioned convex quadratic over all leaves."""
  w, b = params["w"], params["b"]
  scales_w = jnp.array([[1.0, 3.0, 0.5], [2.0, 0.2, 1.5]], w.dtype)
  return (0.5 * jnp.sum(scales_w * (w - 0.1) ** 2)
          + 0.5 * jnp.sum(jnp.array([4.0, 0.7], b.dtype) * b ** 2))


def unroll_loss(lopt, theta, steps=4, num_steps=None, use_value=True, params=None):
  """Sum of the quadratic's loss over ``steps`` inner steps (a ``lax.scan``) plus the
  final loss, with the learned rule of meta-params ``theta``."""
  opt = lopt.transform(theta, num_steps=num_steps)
  params = quadratic_params() if params is None else params
  dtype = jax.tree_util.tree_leaves(theta)[0].dtype
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)

  def step(carry, _):
    params, state = carry
    loss, grads = jax.value_and_grad(quadratic_loss)(params)
    extra = {"value": loss} if use_value else {}
    updates, state = opt.update(grads, state, params, **extra)
    return (optax.apply_updates(params, updates), state), loss

  (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
  return jnp.sum(losses) + quadratic_loss(params)


def make_runner(opt, steps, loss_fn=None):
  """Jitted ``params -> params after each of `steps` updates`` of ``opt`` on ``loss_fn``."""
  loss_fn = loss_fn or quadratic_loss

  @jax.jit
  def go(params):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, state = opt.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      return (params, state), params
    return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[1]

  return go


def run_steps(opt, params, steps, loss_fn=None):
  """The trajectory of ``make_runner`` from ``params``."""
  return make_runner(opt, steps, loss_fn)(params)


def check_meta_grad_matches_fd(lopt, key, steps=4, num_directions=2, rtol=1e-5, **kw):
  """grad of the unrolled loss w.r.t. θ vs central finite differences, in float64.

  Checks the directional derivative along random unit directions (every θ leaf moves),
  which exercises every path from θ to the loss at the cost of two unrolls each.
  """
  with jax.enable_x64(True):
    theta = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64),
                                   lopt.init_meta_params(key))
    f = lambda th: unroll_loss(lopt, th, steps=steps, **kw)
    # One compiled program serves both the gradient and the finite differences.
    value_and_grad = jax.jit(jax.value_and_grad(f))
    _, grad = value_and_grad(theta)
    leaves = jax.tree_util.tree_leaves(grad)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(np.any(np.asarray(g) != 0) for g in leaves), "meta-gradient is all zero"
    flat, unravel = jax.flatten_util.ravel_pytree(theta)
    gflat, _ = jax.flatten_util.ravel_pytree(grad)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for _ in range(num_directions):
      v = rng.normal(size=flat.shape)
      v /= np.linalg.norm(v)
      f_plus = value_and_grad(unravel(flat + eps * v))[0]
      f_minus = value_and_grad(unravel(flat - eps * v))[0]
      fd = (float(f_plus) - float(f_minus)) / (2 * eps)
      analytic = float(jnp.dot(gflat, v))
      np.testing.assert_allclose(analytic, fd, rtol=rtol, atol=1e-8)


def check_io_round_trip(lopt_def, theta, path, steps=3):
  """save -> load gives the same architecture, config and θ, hence identical updates."""
  from metaopt.lopt import io  # pylint: disable=g-import-not-at-top
  io.save(path, lopt_def, theta, metadata={"note": "round trip"})
  loaded_def, loaded_theta, meta = io.load_meta_params(path, arch=lopt_def.arch)
  assert type(loaded_def) is type(lopt_def) and loaded_def.config == lopt_def.config
  assert meta["note"] == "round trip"

  # θ is an argument of one compiled function, so both runs share a program.
  @jax.jit
  def trajectory(th):
    return make_runner(lopt_def.transform(th), steps)(quadratic_params())

  a, b = trajectory(theta), trajectory(jax.tree_util.tree_map(jnp.asarray, loaded_theta))
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
