"""Adafactor-feature MLP: factored accumulators vs numpy and optax, memory, meta-grad."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from metaopt.lopt import adafactor_mlp as A
from metaopt.lopt import features as F


def _run(shape_dict, steps, seed=0):
  """Runs adafactor_mlp for ``steps`` random gradients; returns states and grads."""
  opt = lopt.build("adafactor_mlp", {})
  tx = opt.transform(opt.init_meta_params(jax.random.PRNGKey(0)))
  rng = np.random.RandomState(seed)
  params = {k: rng.randn(*s).astype(np.float32) for k, s in shape_dict.items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  grads_seq = []
  for _ in range(steps):
    grads = {k: rng.randn(*s).astype(np.float32) for k, s in shape_dict.items()}
    _, state = update(grads, state, params)
    grads_seq.append(grads)
  return opt, state, grads_seq


def test_factored_accumulators_match_numpy_and_optax():
  shapes = {"w": (5, 7), "b": (7,)}
  opt, state, grads_seq = _run(shapes, steps=4)
  decays = opt.config.factored_decays
  for k, d in enumerate(decays):
    # numpy reference of the row / column / full accumulators.
    row, col, full = np.zeros(5), np.zeros(7), np.zeros(7)
    for g in grads_seq:
      g2w, g2b = g["w"].astype(np.float64) ** 2 + A.FACTORED_EPS, g["b"] ** 2 + A.FACTORED_EPS
      row = d * row + (1 - d) * g2w.mean(1)
      col = d * col + (1 - d) * g2w.mean(0)
      full = d * full + (1 - d) * g2b
    fac = state.factored
    # rtol: the float32 rounding of d = 0.999 moves 1 - d by ~1e-5 relative.
    np.testing.assert_allclose(fac["w"].row[:, k], row, rtol=1e-4)
    np.testing.assert_allclose(fac["w"].col[:, k], col, rtol=1e-4)
    np.testing.assert_allclose(fac["b"].full[:, k], full, rtol=1e-4)

    # optax's Adafactor scaling with the same constant decay: g * v^-1/2.
    ref = optax.scale_by_factored_rms(decay_rate=d, min_dim_size_to_factor=1,
                                      decay_rate_fn=lambda step, rate: rate)
    params = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    ref_state = ref.init(params)
    for g in grads_seq:
      ref_update, ref_state = ref.update(g, ref_state, params)
    for n in shapes:
      ours = grads_seq[-1][n] * jax.lax.rsqrt(A.reconstruct(fac[n])[..., k] + F.RSQRT_EPS)
      np.testing.assert_allclose(ours, ref_update[n], rtol=1e-4)


def test_factored_memory_is_sublinear():
  opt = lopt.build("adafactor_mlp", {})
  tx = opt.transform(opt.init_meta_params(jax.random.PRNGKey(0)))
  state = jax.eval_shape(tx.init, {"w": jax.ShapeDtypeStruct((300, 200), jnp.float32)})
  k = len(opt.config.factored_decays)
  fac = state.factored["w"]
  assert fac.full is None
  assert fac.row.shape == (300, k) and fac.col.shape == (200, k)


@pytest.mark.slow  # float64 compile of a 3-step unroll and its gradient
def test_num_inputs_derived_and_meta_gradient_matches_finite_differences():
  opt = lopt.build("adafactor_mlp", {"step_mult": 0.1})
  # 2 + 3 momenta + 1 rsqrt + 3 m*rsqrt + 3 + 3 + 9 factored + 11 time
  assert opt.num_inputs == 35 and opt.layer_sizes == (35, 4, 4, 2)

  def loss_after(theta, steps=3):
    tx = opt.transform(theta)
    dtype = theta["layers"][0]["w"].dtype
    # No zero gradient entry: rsqrt(rms + 1e-8) of a ~0 EMA is too stiff for FD.
    target = (1.0 + jnp.arange(12.0, dtype=dtype).reshape(3, 4)) / 10
    params = {"w": jnp.zeros((3, 4), dtype), "b": jnp.ones((4,), dtype)}
    state = tx.init(params)
    loss = lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum(p["b"] ** 2)
    for _ in range(steps):
      value, grads = jax.value_and_grad(loss)(params)
      updates, state = tx.update(grads, state, params, value=value)
      params = optax.apply_updates(params, updates)
    return loss(params)

  with jax.enable_x64(True):
    theta = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                   opt.init_meta_params(jax.random.PRNGKey(1)))
    grad = jax.jit(jax.grad(loss_after))(theta)
    direction = jax.tree_util.tree_map(
        lambda x: jax.random.normal(jax.random.PRNGKey(2), x.shape, jnp.float64), theta)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grad),
                                                         jax.tree_util.tree_leaves(direction)))
    eps = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda t, d: t + s * d, theta, direction)
    f = jax.jit(loss_after)
    numeric = (float(f(shift(eps))) - float(f(shift(-eps)))) / (2 * eps)
  assert abs(analytic) > 1e-4
  np.testing.assert_allclose(analytic, numeric, rtol=1e-5)
