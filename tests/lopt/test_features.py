"""Features against a hand-written numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.lopt import features as F
from metaopt.lopt import mlp


def _numpy_features(grads, param, mom_decays, rms_decays, timescales):
  """small_fc-style features of one tensor after len(grads) updates, in numpy."""
  m = np.zeros(param.shape + (len(mom_decays),))
  v = np.zeros(param.shape + (len(rms_decays),))
  for g in grads:
    for i, d in enumerate(mom_decays):
      m[..., i] = d * m[..., i] + (1 - d) * g
    for i, d in enumerate(rms_decays):
      v[..., i] = d * v[..., i] + (1 - d) * g * g
  g = grads[-1]
  rs = 1.0 / np.sqrt(v + F.RSQRT_EPS)
  mrs = np.stack([m[..., i] * rs[..., j] for i in range(len(mom_decays))
                  for j in range(len(rms_decays))], -1)
  normed = np.concatenate([g[..., None], param[..., None], m, rs, mrs], -1)
  normed = normed.reshape(-1, normed.shape[-1])
  normed = normed / np.sqrt(F.NORM_EPS + np.mean(normed ** 2, axis=0, keepdims=True))
  step = len(grads) - 1  # features are computed before the count is incremented
  time = np.tanh(step / np.asarray(timescales, np.float64) - 1.0)
  return np.concatenate([normed, np.broadcast_to(time, (normed.shape[0], len(time)))], -1), m, v


def test_build_inputs_matches_numpy():
  cfg = mlp.MLPConfig(rms_decays=(0.9, 0.999))
  rng = np.random.RandomState(0)
  param = rng.randn(3, 4).astype(np.float32)
  grads = [rng.randn(3, 4).astype(np.float32) for _ in range(3)]
  expected, m_ref, v_ref = _numpy_features(grads, param, cfg.momentum_decays, cfg.rms_decays,
                                           cfg.timescales)

  mom_d = jnp.asarray(cfg.momentum_decays)
  rms_d = jnp.asarray(cfg.rms_decays)
  m = jnp.zeros((3, 4, 6))
  v = jnp.zeros((3, 4, 2))
  for g in grads:
    m, v = F.ema(m, jnp.asarray(g), mom_d), F.ema(v, jnp.square(g), rms_d)
  np.testing.assert_allclose(m, m_ref, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-7)
  ctx = mlp._context(cfg, jnp.asarray(grads[-1]), jnp.asarray(param), m, v, jnp.int32(2))
  got = F.build_inputs(F.get(cfg.features), ctx)
  assert got.shape == expected.shape == (12, 2 + 6 + 2 + 12 + 11)
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-5)


def test_columns_and_num_inputs_follow_the_list():
  cfg = mlp.MLPConfig()
  feats = F.get(cfg.features)
  cols = F.columns(feats, lambda: mlp._example_context(cfg))
  assert cols["grad"] == slice(0, 1) and cols["momenta"] == slice(2, 8)
  assert cols["time"] == slice(15, 26)
  assert F.num_inputs(feats, lambda: mlp._example_context(cfg)) == 26
  fewer = F.get(("grad", "time"))
  assert F.num_inputs(fewer, lambda: mlp._example_context(cfg)) == 12


def test_second_moment_normalize_unit_rms():
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 7, 3)) * jnp.array([0.3, 1.0, 1e3])
  y = F.second_moment_normalize(x)
  np.testing.assert_allclose(jnp.mean(y ** 2, axis=(0, 1)), 1.0, rtol=2e-4)
  # eps keeps an all-zero (e.g. first-step momentum) column at zero, not NaN.
  np.testing.assert_array_equal(F.second_moment_normalize(jnp.zeros((4, 2))), 0.0)


def test_unknown_feature_lists_known():
  with pytest.raises(KeyError, match="Did you mean momenta"):
    F.get(("momenta_",))
  with pytest.raises(KeyError, match="Known:.*rsqrt_rms"):
    F.get(("nope",))
  with pytest.raises(TypeError, match="sequence"):
    F.get("grad")


def test_missing_context_key_is_explained():
  with pytest.raises(ValueError, match="rsqrt_factored.*factored"):
    F.check_context(F.get(("grad", "rsqrt_factored")), {"grad": jnp.zeros(2)})


def test_fused_normalization_gradient_matches_plain_reference():
  """build_inputs (one variadic reduction with a custom JVP) has the values and the
  gradient of the plain concatenate + second_moment_normalize formula."""
  cfg = mlp.MLPConfig(features=("grad", "param", "momenta", "time"))
  feats = F.get(cfg.features)
  m = jnp.linspace(-1.0, 2.0, 3 * 4 * 6).reshape(3, 4, 6)
  p = jnp.cos(jnp.arange(12.0)).reshape(3, 4)
  weights = jnp.sin(jnp.arange(12 * 19.0)).reshape(12, 19)

  def ours(g):
    ctx = mlp._context(cfg, g, p, m, jnp.ones((3, 4, 1)), jnp.int32(3))
    return jnp.sum(jnp.tanh(F.build_inputs(feats, ctx)) * weights)

  def reference(g):
    normed = F.second_moment_normalize(jnp.concatenate([g[..., None], p[..., None], m], -1))
    time = jnp.broadcast_to(F.tanh_step_embedding(3, jnp.asarray(cfg.timescales, jnp.float32)),
                            (12, 11))
    return jnp.sum(jnp.tanh(jnp.concatenate([normed.reshape(12, 8), time], -1)) * weights)

  g = jnp.sin(jnp.arange(12.0) * 0.7).reshape(3, 4)
  np.testing.assert_allclose(ours(g), reference(g), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(ours)(g), jax.grad(reference)(g), rtol=1e-4, atol=1e-6)
