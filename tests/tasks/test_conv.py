"""Conv tasks: forward pass against a numpy reference, param_info, family vmapping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasks import common, conv

DATA = common.synthetic_image_data(seed=2, n=128, shape=(8, 8, 1), n_classes=4)


def _numpy_conv_stride2_same(x, w, b):
  """3x3 stride-2 SAME cross-correlation for even H, W (padding 0 before, 1 after)."""
  n, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  out = np.zeros((n, h // 2, wd // 2, w.shape[-1]))
  for i in range(h // 2):
    for j in range(wd // 2):
      patch = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
  return out + b


def test_forward_matches_numpy_reference():
  task = conv.conv_task(data=DATA, channels=(3, 5), batch_size=4)
  params = task.init(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: p + 0.1, params)  # Nonzero biases too.
  image = np.asarray(task.sample_batch(jax.random.PRNGKey(1))["image"], np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h = np.maximum(_numpy_conv_stride2_same(image, p["conv_0"]["w"], p["conv_0"]["b"]), 0)
  h = np.maximum(_numpy_conv_stride2_same(h, p["conv_1"]["w"], p["conv_1"]["b"]), 0)
  expected = h.reshape(h.shape[0], -1) @ p["readout"]["w"] + p["readout"]["b"]
  np.testing.assert_allclose(conv.conv_forward(params, jnp.asarray(image, jnp.float32)),
                             expected, rtol=1e-4, atol=1e-5)


def test_param_info_and_batch():
  task = conv.conv_task(data=DATA, channels=(3, 5), batch_size=16)
  params = task.init(jax.random.PRNGKey(0))
  info = task.param_info(params)
  assert (info["conv_0"]["w"].role, info["conv_0"]["w"].fan_in) == ("input", 9)
  assert (info["conv_1"]["w"].role, info["conv_1"]["w"].fan_in) == ("hidden", 27)
  # 8x8 -> 4x4 -> 2x2 with 5 channels: readout fan_in 2 * 2 * 5.
  assert (info["readout"]["w"].role, info["readout"]["w"].fan_in,
          info["readout"]["w"].fan_out) == ("output", 20, 4)
  assert task.metadata["num_params"] == sum(x.size for x in jax.tree.leaves(params))
  batch = task.sample_batch(jax.random.PRNGKey(0))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), batch) == jax.tree.map(
      lambda x: (x.shape, x.dtype), task.abstract_batch)
  assert float(batch["image"].max()) <= 1.0


def test_family_vmaps():
  fam = conv.conv_family(data=DATA, channel_choices=(4,), batch_size=16)
  cfg = fam.sample_batch(jax.random.PRNGKey(0), 4)

  @jax.jit
  def run(dynamic, key):
    def one(dyn):
      task = fam.make_task(cfg.static, dyn)
      params = task.init(key)
      loss, grads = jax.value_and_grad(task.loss)(params, task.batch(task.data, key, "train"),
                                                  key)
      return loss, optax.tree.norm(grads)
    return jax.vmap(one)(dynamic)

  loss, gnorm = run(cfg.dynamic, jax.random.PRNGKey(1))
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(gnorm))
  assert len(np.unique(np.asarray(loss))) == 4
