"""The horizon contract of ``metaopt.lopt.base``: ``num_steps`` is the run's number of
updates, recorded in the state by ``init`` (possibly traced), read by ``update`` from
the state, and "unknown" is one value for every feature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import lopt
from metaopt.lopt import base
from metaopt.lopt import features as F
from tasks.base import ParamInfo
from tests.lopt import _lopt_b_utils as utils

_SMALL = {"hypernet": {"lstm_hidden": 4, "num_mlps": 2, "mlp_hidden": 2}}
INFO = {"w": ParamInfo("hidden", fan_in=2, fan_out=3), "b": ParamInfo("bias", fan_out=2)}


def test_horizon_value_is_one_int32_scalar_with_unknown_zero():
  assert int(base.horizon_value(None)) == base.UNKNOWN_HORIZON == 0
  assert int(base.horizon_value(120)) == 120 and base.horizon_value(120).dtype == jnp.int32
  assert int(base.horizon_value(np.int64(7))) == 7
  assert int(jax.jit(base.horizon_value)(jnp.asarray(9))) == 9
  assert int(jax.jit(base.horizon_value)(jnp.asarray(-3))) == base.UNKNOWN_HORIZON
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="num_steps"):
      base.horizon_value(bad)
  with pytest.raises(ValueError, match="integer"):
    base.horizon_value(jnp.asarray(3.0))


def test_fraction_features_unknown_is_zero_and_known_matches_the_definition():
  np.testing.assert_array_equal(F.fraction_features(jnp.int32(30), base.horizon_value(None)),
                                np.zeros(7))
  got = F.fraction_features(jnp.int32(30), jnp.int32(120))
  want = [0.25, 1.0] + list(np.tanh(10 * (0.25 - np.array(F.FRACTION_CENTERS))))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(F.fraction_features(jnp.int32(500), jnp.int32(120))[0]) == 1.0


def _updates(opt_def, theta, init_steps, update_steps, steps=3):
  init_opt = opt_def.transform(theta, num_steps=init_steps, param_info=INFO)
  update_opt = opt_def.transform(theta, num_steps=update_steps, param_info=INFO)
  params = utils.quadratic_params()

  @jax.jit
  def run(params):
    state = init_opt.init(params)
    out = []
    for _ in range(steps):
      loss, grads = jax.value_and_grad(utils.quadratic_loss)(params)
      u, state = update_opt.update(grads, state, params, value=loss)
      params = jax.tree_util.tree_map(lambda p, x: p + x, params, u)
      out.append(u)
    return out

  return jax.tree_util.tree_leaves(run(params))


@pytest.mark.parametrize("arch", sorted(lopt.arch_names()))
def test_update_reads_the_horizon_from_the_state(arch):
  """``transform(θ, num_steps=h).init`` then ``transform(θ).update`` is
  ``transform(θ, num_steps=h)`` throughout (meta-training builds the update's
  transformation without the horizon: it lives in the state)."""
  opt_def = lopt.build(arch, _SMALL.get(arch))
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  for a, b in zip(_updates(opt_def, theta, 10, 10), _updates(opt_def, theta, 10, None)):
    np.testing.assert_array_equal(a, b)


def test_a_traced_horizon_vmaps_and_reaches_the_rule():
  opt_def = lopt.build("hypernet", _SMALL["hypernet"])
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  theta["heads"]["w_lr"] = jnp.ones_like(theta["heads"]["w_lr"])
  params = utils.quadratic_params()
  grads = jax.grad(utils.quadratic_loss)(params)

  def two_steps(horizon):
    opt = opt_def.transform(theta, num_steps=horizon)
    state = opt.init(params)
    _, state = opt.update(grads, state, params)
    u, state = opt.update(grads, state, params)
    return u["w"], state.horizon

  u, h = jax.jit(jax.vmap(two_steps))(jnp.asarray([4, 400, 0]))
  np.testing.assert_array_equal(h, [4, 400, base.UNKNOWN_HORIZON])
  assert not np.allclose(u[0], u[1])
  # A traced horizon gives what the Python int gives; 0 (unknown) what None gives.
  for i, static in ((0, 4), (1, 400), (2, None)):
    np.testing.assert_allclose(u[i], jax.jit(lambda: two_steps(static)[0])(), rtol=1e-6)


def test_fraction_is_a_per_element_network_input_in_hypernet():
  feats = lopt.build("hypernet").config.features + ("fraction",)
  opt_def = lopt.build("hypernet", dict(_SMALL["hypernet"], features=feats))
  theta = opt_def.init_meta_params(jax.random.PRNGKey(0))
  params = utils.quadratic_params()
  grads = jax.grad(utils.quadratic_loss)(params)

  def first_update(horizon):
    opt = opt_def.transform(theta, num_steps=horizon)
    return opt.update(grads, opt.init(params), params)[0]["w"]

  unknown, known = jax.jit(jax.vmap(first_update))(jnp.asarray([0, 50]))
  assert np.all(np.isfinite(known)) and not np.allclose(unknown, known)
  with pytest.raises(ValueError, match="horizon"):  # an architecture without the key
    lopt.build("mlp", {"features": ("grad", "fraction")}).transform(
        lopt.build("mlp").init_meta_params(jax.random.PRNGKey(0)))
