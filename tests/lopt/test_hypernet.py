"""Tests of the VeLO-style hypernetwork learned optimizer (metaopt/lopt/hypernet.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import lopt
from tests.lopt import _lopt_b_utils as utils

_SMALL = {"lstm_hidden": 6, "num_mlps": 3}
# Fewer columns, hence a smaller program to compile, where the feature set is not the point.
_TINY = {"lstm_hidden": 4, "num_mlps": 2, "momentum_decays": (0.9,),
         "features": ("grad", "momenta_rsqrt_rms")}


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_features(g, p, ms, v):
  """Default per-parameter features of one tensor, second-moment normalized (numpy).

  Columns: grad, param, 3 momenta, rsqrt(v), 3 momenta * rsqrt(v).
  """
  r = 1.0 / np.sqrt(v + 1e-8)
  cols = [g, p] + list(ms) + [r] + [m * r for m in ms]
  return [c / np.sqrt(1e-5 + np.mean(c ** 2)) for c in cols]


def _np_reference_updates(theta, grads_seq, params, cfg):
  """Two-level rule in numpy for θ whose LSTM input weights are zero.

  With ``wx = wh = 0`` the LSTM's gates are functions of its bias only, so its output
  h_t is known in closed form: c_t = σ(b_f) c_{t-1} + σ(b_i) tanh(b_u), h_t = σ(b_o)
  tanh(c_t). The heads, the mixed MLP and the step formula are then written out here.
  """
  lstm = theta["lstm"][0]
  hid = cfg.lstm_hidden
  b = np.asarray(lstm["b"], np.float64)
  bi, bf, bu, bo = (b[k * hid:(k + 1) * hid] for k in range(4))
  heads = {k: np.asarray(v, np.float64) for k, v in theta["heads"].items()}
  bank = {k: np.asarray(v, np.float64) for k, v in theta["bank"].items()}
  names = list(params)
  state = {k: ([np.zeros(np.size(params[k]))] * 3, np.zeros(np.size(params[k]))) for k in names}
  c_prev = np.zeros(hid)
  out = []
  for grads in grads_seq:
    c_prev = _sig(bf) * c_prev + _sig(bi) * np.tanh(bu)
    h = _sig(bo) * np.tanh(c_prev)
    mix = np.exp(h @ heads["w_mix"] + heads["b_mix"])
    mix /= mix.sum()
    lr_mult = np.exp(h @ heads["w_lr"] + heads["b_lr"])
    w1 = np.einsum("k,kfh->fh", mix, bank["w1"])
    b1, w2, b2 = mix @ bank["b1"], np.einsum("k,kho->ho", mix, bank["w2"]), mix @ bank["b2"]
    updates = {}
    for k in names:
      g = np.asarray(grads[k], np.float64).reshape(-1)
      p = np.asarray(params[k], np.float64).reshape(-1)
      ms, v = state[k]
      ms = [d * m + (1 - d) * g for d, m in zip((0.9, 0.99, 0.999), ms)]
      v = 0.999 * v + 0.001 * g ** 2
      state[k] = (ms, v)
      x = np.stack(_np_features(g, p, ms, v), axis=-1)          # (n, 9)
      hidden = np.maximum(x @ w1 + b1, 0.0)
      d, mag = (hidden @ w2 + b2).T
      scale = np.sqrt(np.mean(p ** 2)) + cfg.param_scale_eps
      step = d * np.exp(1e-3 * mag) * 1e-3 * scale * lr_mult
      updates[k] = (-step).reshape(np.shape(params[k]))
    out.append(updates)
  return out


def test_registered_and_sizes_derived():
  opt = lopt.build("hypernet")
  assert "hypernet" in lopt.arch_names()
  assert opt.num_inputs == 9  # grad, param, 3 momenta, rsqrt_rms, 3 momenta*rsqrt
  # stats 1+1+3+3+1, log-step 6, fraction 1+1+5, loss 2+1
  assert opt.lstm_input_size == 9 + 6 + 7 + 3
  assert lopt.build("hypernet", {"tensor_stats": ["log_size"]}).lstm_input_size == 1 + 16


@pytest.mark.parametrize("bad, match", [
    ({"features": ["grad", "momentum"]}, "Did you mean momenta"),
    ({"tensor_stats": ["log_rms"]}, "Unknown tensor_stats"),
    ({"num_mlps": 0}, "num_mlps"),
    ({"features": ["time"]}, "per-element"),
    ({"lstm_size": 4}, "known fields"),
])
def test_bad_config_is_rejected(bad, match):
  with pytest.raises(ValueError, match=match):
    lopt.build("hypernet", bad)


def test_step_formula_matches_numpy_reference():
  opt_def = lopt.build("hypernet", _SMALL)
  cfg = opt_def.config
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  layer = theta["lstm"][0]
  theta["lstm"] = [{"wx": jnp.zeros_like(layer["wx"]), "wh": jnp.zeros_like(layer["wh"]),
                    "b": normal(*layer["b"].shape)}]
  theta["heads"] = {"w_mix": normal(6, 3), "b_mix": normal(3), "w_lr": normal(6),
                    "b_lr": jnp.asarray(0.3)}
  theta["bank"]["b1"] = normal(3, 4)
  theta["bank"]["b2"] = normal(3, 2)
  params = {"w": normal(4, 3), "b": jnp.zeros((3,)), "s": jnp.asarray(0.7)}
  grads_seq = [{k: jnp.asarray(rng.normal(size=np.shape(v)), jnp.float32)
                for k, v in params.items()} for _ in range(2)]
  opt = opt_def.transform(theta)
  update = jax.jit(opt.update)
  state = jax.jit(opt.init)(params)
  ours = []
  for grads in grads_seq:
    u, state = update(grads, state, params)
    ours.append(u)
  ref = _np_reference_updates(theta, grads_seq, params, cfg)
  for u, r in zip(ours, ref):
    for k in params:
      np.testing.assert_allclose(np.asarray(u[k]), r[k], rtol=2e-4, atol=1e-9)
  # Zero-initialized tensors move thanks to param_scale_eps.
  assert np.all(np.asarray(ours[0]["b"]) != 0)


def test_lstm_inputs_match_numpy():
  """Tensor statistics, time and loss features fed to the per-tensor LSTM."""
  opt_def = lopt.build("hypernet", _SMALL)
  rng = np.random.default_rng(1)
  g, p = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
  ms, v = [rng.normal(size=(5, 2)) for _ in range(3)], rng.uniform(0.5, 2, size=(5, 2))
  tensor = {"grad": jnp.asarray(g), "param": jnp.asarray(p),
            "momenta": [jnp.asarray(m) for m in ms],
            "rms": [jnp.asarray(v)]}
  loss_feats = jnp.array([0.2, -0.1])
  step = jnp.asarray(30, jnp.int32)
  rms = lambda x: np.sqrt(np.mean(x ** 2))
  stats = ([0.1 * np.log(rms(g) + 1e-8), 0.1 * np.log(rms(p) + 1e-8)]
           + [0.1 * np.log(rms(m) + 1e-8) for m in ms]
           + [np.mean(m / np.sqrt(v + 1e-8)) for m in ms] + [0.1 * np.log(10.0)])
  log_step = list(np.tanh(30.0 / np.array([1, 10, 100, 1000, 10000, 100000]) - 1))
  for num_steps in (None, 120):
    gf = opt_def._global_features(step, num_steps, loss_feats, jnp.asarray(1.0))
    got = np.asarray(opt_def._lstm_inputs(tensor, gf))
    if num_steps is None:
      frac = [0.0] * 7
    else:
      frac = [0.25, 1.0] + list(np.tanh(10 * (0.25 - np.array([0.1, 0.3, 0.5, 0.7, 0.9]))))
    expected = np.array(stats + log_step + frac + [0.2, -0.1, 1.0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_loss_features_and_horizon_change_the_update():
  """value and num_steps reach the rule; without them it still runs."""
  opt_def = lopt.build("hypernet", _TINY)
  theta = opt_def.init_meta_params(jax.random.PRNGKey(4))
  theta["heads"]["w_lr"] = jnp.ones_like(theta["heads"]["w_lr"])
  params = utils.quadratic_params()
  grads = jax.grad(utils.quadratic_loss)(params)

  def two_updates(num_steps, values):
    opt = opt_def.transform(theta, num_steps=num_steps)

    @jax.jit
    def run():
      state = opt.init(params)
      for val in values:
        extra = {} if val is None else {"value": jnp.asarray(val)}
        u, state = opt.update(grads, state, params, **extra)
      return u["w"], state

    u, state = run()
    return np.asarray(u), state

  base, s = two_updates(None, [None, None])
  assert np.all(np.isfinite(base)) and float(s.loss_seen) == 0.0
  with_loss, s = two_updates(None, [2.0, 1.0])
  assert float(s.loss_seen) == 1.0 and not np.allclose(base, with_loss)
  np.testing.assert_allclose(np.asarray(s.loss_ema), [0.9 * 2.0 + 0.1, 0.99 * 2.0 + 0.01],
                             rtol=1e-6)
  with_horizon, _ = two_updates(10, [None, None])
  assert not np.allclose(base, with_horizon)


def test_jit_vmap_over_tasks_with_shared_theta():
  opt_def = lopt.build("hypernet", _TINY)
  opt = opt_def.transform(opt_def.init_meta_params(jax.random.PRNGKey(0)), num_steps=50)
  params = jax.vmap(lambda s: jax.tree_util.tree_map(lambda p: p * s, utils.quadratic_params()))(
      jnp.array([1.0, 2.0, -1.0]))

  def step(p):
    s = opt.init(p)
    loss, g = jax.value_and_grad(utils.quadratic_loss)(p)
    u, _ = opt.update(g, s, p, value=loss)
    return u

  batched = jax.jit(jax.vmap(step))(params)
  single = jax.jit(step)(jax.tree_util.tree_map(lambda x: x[2], params))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[2], b, rtol=1e-5, atol=1e-9),
                         batched, single)


def test_meta_gradient_matches_finite_differences():
  """Horizon and loss features on, so every θ path (LSTM, heads, bank) is exercised.

  The bias starts at zero: RMS(param) and log-RMS statistics of an all-zero tensor
  must not turn the meta-gradient into NaN.
  """
  opt_def = lopt.build("hypernet", {"lstm_hidden": 4, "num_mlps": 2, "step_mult": 0.05,
                                    "momentum_decays": (0.9,),
                                    "features": ("grad", "momenta_rsqrt_rms"),
                                    "tensor_stats": ("log_rms_param", "mean_momenta_rsqrt_rms")})
  params = {"w": utils.quadratic_params()["w"], "b": jnp.zeros((2,))}
  utils.check_meta_grad_matches_fd(opt_def, jax.random.PRNGKey(5), steps=2, num_steps=10,
                                   params=params)


@pytest.mark.slow  # behaviour beyond the required checks; keeps the default run short
def test_deterministic_and_descends():
  def trajectory(key):
    # A separately built optimizer each time, so nothing is shared but the config and key.
    opt_def = lopt.build("hypernet", {**_SMALL, "step_mult": 0.05})
    theta = opt_def.init_meta_params(key)
    # A bank whose direction follows the normalized gradient: a sign-descent-like rule.
    w1, w2 = jnp.zeros_like(theta["bank"]["w1"]), jnp.zeros_like(theta["bank"]["w2"])
    theta["bank"]["w1"] = w1.at[:, 0, 0].set(1.0).at[:, 0, 1].set(-1.0)
    theta["bank"]["w2"] = w2.at[:, 0, 0].set(1.0).at[:, 1, 0].set(-1.0)
    return utils.run_steps(opt_def.transform(theta), utils.quadratic_params(), 30)

  traj = trajectory(jax.random.PRNGKey(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, traj, trajectory(jax.random.PRNGKey(0)))
  # The key matters (it sets the LSTM and the heads): another key, another trajectory.
  assert not np.allclose(traj["w"][-1], trajectory(jax.random.PRNGKey(1))["w"][-1])
  final = jax.tree_util.tree_map(lambda x: x[-1], traj)
  assert float(utils.quadratic_loss(final)) < 0.7 * float(
      utils.quadratic_loss(utils.quadratic_params()))


def test_save_load_round_trip(tmp_path):
  opt_def = lopt.build("hypernet", {**_TINY, "momentum_decays": (0.5,)})
  theta = opt_def.init_meta_params(jax.random.PRNGKey(7))
  utils.check_io_round_trip(opt_def, theta, tmp_path / "hypernet.safetensors")
