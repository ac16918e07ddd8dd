"""Tests of the coordinate-wise LSTM optimizer (metaopt/lopt/lstm.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from metaopt.lopt import lstm as lstm_lib
from tests.lopt import _lopt_b_utils as utils


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_preprocess(g, p):
  g = np.asarray(g, np.float64)
  out = np.zeros(g.shape + (2,))
  for idx, v in np.ndenumerate(g):
    if abs(v) >= np.exp(-p):
      out[idx] = (np.log(abs(v)) / p, np.sign(v))
    else:
      out[idx] = (-1.0, np.exp(p) * v)
  return out


def _np_lstm_step(layers, x, state):
  """Textbook LSTM cell (gates i, f, g, o), written out in numpy."""
  new_state = []
  inp = x
  for layer, (h, c) in zip(layers, state):
    wx, wh, b = (np.asarray(layer[k], np.float64) for k in ("wx", "wh", "b"))
    hid = h.shape[-1]
    z = inp @ wx + h @ wh + b
    i, f, u, o = (z[..., j * hid:(j + 1) * hid] for j in range(4))
    c = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(u)
    h = _np_sigmoid(o) * np.tanh(c)
    new_state.append((h, c))
    inp = h
  return inp, new_state


def test_registered_and_builds():
  opt = lopt.build("lstm", {"hidden": 8})
  assert isinstance(opt, lstm_lib.CoordinateLSTM) and opt.config.hidden == 8
  assert "lstm" in lopt.arch_names()


def test_bad_config_is_rejected_with_field_names():
  with pytest.raises(ValueError, match="known fields"):
    lopt.build("lstm", {"hiden": 8})
  with pytest.raises(ValueError, match="hidden"):
    lopt.build("lstm", {"hidden": 0})


def test_preprocessing_matches_numpy():
  g = jnp.array([3.0, -0.2, 1e-6, -3e-5, 0.0, 4.6e-5])  # exp(-10) ≈ 4.54e-5
  np.testing.assert_allclose(np.asarray(lstm_lib.preprocess_gradient(g, 10.0)),
                             _np_preprocess(np.asarray(g), 10.0), rtol=1e-6, atol=1e-7)
  # Differentiable at 0 (no NaN from the unused log branch).
  d = jax.grad(lambda x: lstm_lib.preprocess_gradient(x, 10.0).sum())(jnp.zeros(3))
  assert np.all(np.isfinite(np.asarray(d)))


def test_skip_only_equals_sgd():
  """θ with zero readout and skip = lr reduces the rule to optax.sgd(lr) exactly."""
  lr = 0.07
  opt_def = lopt.build("lstm")
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  theta["readout"] = jax.tree_util.tree_map(jnp.zeros_like, theta["readout"])
  theta["skip"] = jnp.asarray(lr)
  ours = utils.run_steps(opt_def.transform(theta), utils.quadratic_params(), 5)
  ref = utils.run_steps(optax.sgd(lr), utils.quadratic_params(), 5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, ref)


def test_two_steps_match_numpy_lstm():
  """Update = output_scale * readout(LSTM(preprocess(g))) with state carried over steps."""
  cfg = {"hidden": 5, "num_layers": 2, "output_scale": 0.1}
  opt_def = lopt.build("lstm", cfg)
  theta = opt_def.init_meta_params(jax.random.PRNGKey(1))
  theta["readout"]["w"] = jnp.asarray(np.random.default_rng(2).normal(size=5), jnp.float32)
  theta["readout"]["b"] = jnp.asarray(0.3)
  theta["skip"] = jnp.asarray(0.05)
  opt = opt_def.transform(theta)
  update = jax.jit(opt.update)
  params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros((4,))}
  state = opt.init(params)
  rng = np.random.default_rng(0)
  np_state = {k: [(np.zeros(v.shape + (5,)),) * 2] * 2 for k, v in params.items()}
  for _ in range(2):
    grads = {k: jnp.asarray(rng.normal(size=v.shape) * 10.0 ** rng.uniform(-6, 1, v.shape),
                            jnp.float32) for k, v in params.items()}
    updates, state = update(grads, state, params)
    for k, g in grads.items():
      h, np_state[k] = _np_lstm_step(theta["lstm"], _np_preprocess(np.asarray(g), 10.0),
                                     np_state[k])
      expected = (0.1 * (h @ np.asarray(theta["readout"]["w"]) + 0.3)
                  - 0.05 * np.asarray(g, np.float64))
      np.testing.assert_allclose(np.asarray(updates[k]), expected, rtol=2e-5, atol=1e-6)
  assert int(state.step) == 2


def test_jit_vmap_over_tasks_with_shared_theta():
  opt_def = lopt.build("lstm", {"hidden": 6})
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  opt = opt_def.transform(theta)
  params = jax.vmap(lambda s: jax.tree_util.tree_map(lambda p: p * s, utils.quadratic_params()))(
      jnp.array([1.0, 2.0, -1.0]))

  def step(p):
    s = opt.init(p)
    g = jax.grad(utils.quadratic_loss)(p)
    u, _ = opt.update(g, s, p, value=utils.quadratic_loss(p))
    return u

  batched = jax.jit(jax.vmap(step))(params)
  single = step(jax.tree_util.tree_map(lambda x: x[1], params))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-7),
                         batched, single)


def test_meta_gradient_matches_finite_differences():
  utils.check_meta_grad_matches_fd(lopt.build("lstm", {"hidden": 4}), jax.random.PRNGKey(3),
                                   steps=3)


@pytest.mark.slow  # behaviour beyond the required checks; keeps the default run short
def test_decreases_loss_without_value_and_is_deterministic():
  """Horizon-free and value-free: the skip term makes the initial rule descend."""
  opt_def = lopt.build("lstm", {"skip_init": 0.1})
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  # A separately built optimizer: the same key gives the same result, another key another.
  other = lopt.build("lstm", {"skip_init": 0.1})
  loss = lambda opt, key: float(utils.unroll_loss(opt, opt.init_meta_params(key), steps=10,
                                                  use_value=False))
  same, different = loss(other, jax.random.PRNGKey(0)), loss(other, jax.random.PRNGKey(1))
  assert loss(opt_def, jax.random.PRNGKey(0)) == same != different
  traj = utils.run_steps(opt_def.transform(theta), utils.quadratic_params(), 20)
  final = jax.tree_util.tree_map(lambda x: x[-1], traj)
  assert float(utils.quadratic_loss(final)) < 0.5 * float(
      utils.quadratic_loss(utils.quadratic_params()))


def test_save_load_round_trip(tmp_path):
  opt_def = lopt.build("lstm", {"hidden": 5, "skip_init": 0.05})
  theta = opt_def.init_meta_params(jax.random.PRNGKey(7))
  utils.check_io_round_trip(opt_def, theta, tmp_path / "lstm.safetensors")
