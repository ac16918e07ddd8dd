"""μLO: the μP step rule, the param_info contract, and a width coordinate check."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from metaopt.lopt import mulo
from tasks import common
from tasks import mlp as task_mlp
from tasks.base import ParamInfo

WIDTHS = (32, 128, 512)
SMALL = {"hidden_sizes": (8, 8)}  # the check concerns the μP rule, not the MLP size


def _params(widths=(64, 16, 16, 10)):
  return task_mlp.init_mlp(jax.random.PRNGKey(0), widths, "mup")


def test_mlp_param_info_matches_task_contract():
  params = _params()
  info = mulo.mlp_param_info(params, input="linear_0", output="linear_2")
  assert info == task_mlp.mlp_param_info(params)
  assert info["linear_1"]["w"] == ParamInfo("hidden", 16, 16)
  with pytest.raises(ValueError, match=r"\['linear_9'\] match no matrix.*linear_0/w"):
    mulo.mlp_param_info(params, input="linear_9", output="linear_2")


def test_step_is_mlp_step_times_mup_multiplier():
  params = _params()
  grads = jax.tree_util.tree_map(lambda p: jnp.sin(jnp.arange(p.size, dtype=jnp.float32)
                                                   ).reshape(p.shape), params)
  theta = lopt.build("mlp", SMALL).init_meta_params(jax.random.PRNGKey(0))
  info = task_mlp.mlp_param_info(params)
  tx_mu = lopt.build("mulo", SMALL).transform(theta, param_info=info)
  tx_sp = lopt.build("mlp", SMALL).transform(theta)
  u_mu = jax.jit(tx_mu.update)(grads, tx_mu.init(params), params)[0]
  u_sp = jax.jit(tx_sp.update)(grads, tx_sp.init(params), params)[0]
  for layer, mult in (("linear_0", 1.0), ("linear_1", 1.0 / 16), ("linear_2", 1.0)):
    np.testing.assert_allclose(u_mu[layer]["w"], mult * u_sp[layer]["w"], rtol=1e-6)
    np.testing.assert_allclose(u_mu[layer]["b"], u_sp[layer]["b"], rtol=1e-6)


def test_param_info_is_required_and_checked():
  opt = lopt.build("mulo", SMALL)
  theta = opt.init_meta_params(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="needs param_info.*mlp_param_info"):
    opt.transform(theta)
  params = _params()
  info = task_mlp.mlp_param_info(params)
  del info["linear_2"]
  with pytest.raises(ValueError, match="param_info does not match the params"):
    opt.transform(theta, param_info=info).init(params)
  with pytest.raises(TypeError, match="ParamInfo"):
    opt.transform(theta, param_info={"w": "hidden"})


def _coordinate_stats(arch, parametrization, width, data, steps=10):
  """RMS of each layer's activations after ``steps`` updates and of their change."""
  task = task_mlp.mlp_task("digits", hidden=(width, width), parametrization=parametrization,
                           batch_size=32, data=data)
  opt = lopt.build(arch, SMALL)
  params = task.init(jax.random.PRNGKey(1))
  tx = opt.transform(opt.init_meta_params(jax.random.PRNGKey(0)),
                     param_info=task.param_info(params))
  acts = task_mlp.activations_fn(task)
  rms = lambda x: jnp.sqrt(jnp.mean(x ** 2))

  @jax.jit
  def run(params, data):
    probe = task.batch(data, jax.random.PRNGKey(99), "train")

    def step(carry, key):
      p, s = carry
      loss, g = jax.value_and_grad(task.loss)(p, task.batch(data, key, "train"), key)
      u, s = tx.update(g, s, p, value=loss)
      return (optax.apply_updates(p, u), s), None

    keys = jax.random.split(jax.random.PRNGKey(2), steps)
    (final, _), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
    a0, a1 = acts(params, probe), acts(final, probe)
    return {k: (rms(a1[k]), rms(a1[k] - a0[k])) for k in a1}

  return run(params, task.data)


def _slopes(arch, parametrization):
  data = common.load_dataset("digits")
  stats = [_coordinate_stats(arch, parametrization, w, data) for w in WIDTHS]
  fit = lambda ys: np.polyfit(np.log(WIDTHS), np.log(np.asarray(ys, np.float64)), 1)[0]
  return {k: (fit([s[k][0] for s in stats]), fit([s[k][1] for s in stats])) for k in stats[0]}


@pytest.mark.slow  # 6 compiled 10-step runs: ~40 s of CPU on the 2-core dev machine
def test_mup_coordinate_check_flat_in_width():
  """μLO on μP MLPs of widths 32..512: per-layer activation RMS and the RMS of the
  change the updates made to them have log-log slope against width |s| < 0.35
  (at most 2.6x drift over the 16x width range; measured: |s| <= 0.26, the largest
  for the hidden layer's change, from finite-width effects at width 32), while the
  standard parametrization drifts with slopes 0.90 (hidden) and 1.36 (logits)."""
  slopes = _slopes("mulo", "mup")
  for layer, (s_act, s_delta) in slopes.items():
    assert abs(s_act) < 0.35 and abs(s_delta) < 0.35, (layer, s_act, s_delta)


@pytest.mark.slow
def test_standard_parametrization_drifts():
  """The same check with the standard per-parameter MLP on SP MLPs: the updates'
  effect on hidden activations and logits grows with width (slope > 0.5)."""
  slopes = _slopes("mlp", "standard")
  assert slopes["linear_1"][1] > 0.5 and slopes["logits"][1] > 0.5, slopes
