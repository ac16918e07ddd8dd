"""MLP tasks: shapes, μP contract, determinism, family vmapping (synthetic data)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tasks
from tasks import common, mlp

DATA = common.synthetic_image_data(seed=0, n=256)


def _train(task, steps=40, lr=1e-2):
  opt = optax.adam(lr)

  @jax.jit
  def step(params, state, key):
    loss, grads = jax.value_and_grad(task.loss)(params, task.batch(task.data, key, "train"), key)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  state = opt.init(params)
  losses = []
  for i in range(steps):
    params, state, loss = step(params, state, jax.random.PRNGKey(i))
    losses.append(float(loss))
  return params, np.array(losses)


def test_param_info_roles_and_fan_ins():
  task = mlp.mlp_task(data=DATA, hidden=(16, 24, 8))
  params = task.init(jax.random.PRNGKey(0))
  info = task.param_info(params)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      info, is_leaf=lambda x: isinstance(x, mlp.ParamInfo))
  expected = [("input", 64, 16), ("hidden", 16, 24), ("hidden", 24, 8), ("output", 8, 10)]
  for i, (role, fan_in, fan_out) in enumerate(expected):
    w = info[f"linear_{i}"]["w"]
    assert (w.role, w.fan_in, w.fan_out) == (role, fan_in, fan_out)
    assert params[f"linear_{i}"]["w"].shape == (fan_in, fan_out)
    assert info[f"linear_{i}"]["b"].role == "bias"


def test_mup_init_and_output_multiplier():
  width = 256
  task = mlp.mlp_task(data=DATA, hidden=(width, width), parametrization="mup")
  params = jax.jit(task.init)(jax.random.PRNGKey(1))
  assert task.metadata["output_multiplier"] == pytest.approx(1.0 / width)
  np.testing.assert_array_equal(params["linear_2"]["w"], 0.0)
  np.testing.assert_array_equal(params["linear_2"]["b"], 0.0)
  # Fan-in μP init: std 1/sqrt(fan_in) for input (fan_in 64) and hidden (fan_in 256).
  np.testing.assert_allclose(np.std(params["linear_0"]["w"]), 1 / np.sqrt(64), rtol=0.05)
  np.testing.assert_allclose(np.std(params["linear_1"]["w"]), 1 / np.sqrt(width), rtol=0.05)
  # Logits = (h @ w_out) / width + b_out, checked with a nonzero readout.
  params["linear_2"]["w"] = jax.random.normal(jax.random.PRNGKey(2), (width, 10))
  params["linear_2"]["b"] = jnp.arange(10.0)
  batch = task.sample_batch(jax.random.PRNGKey(3))
  logits, acts = jax.jit(lambda p, x: mlp.mlp_forward(p, x, "relu", 1.0 / width,
                                                      return_activations=True))(params, batch["x"])
  # Independent float64 numpy reference.
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(batch["x"], np.float64)
  h = np.maximum(np.maximum(x @ p["linear_0"]["w"], 0) @ p["linear_1"]["w"], 0)
  np.testing.assert_allclose(acts["linear_1"], h, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits, h @ p["linear_2"]["w"] / width + np.arange(10.0),
                             rtol=1e-4, atol=1e-4)
  got = jax.jit(mlp.activations_fn(task))(params, batch)
  assert set(got) == {"linear_0", "linear_1", "logits"}
  np.testing.assert_allclose(got["logits"], logits, rtol=1e-6)


def test_mup_init_loss_is_chance():
  task = mlp.mlp_task(data=DATA, parametrization="mup")
  loss = jax.jit(lambda key: task.loss(task.init(key), task.batch(task.data, key, "train"),
                                       key))(jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, np.log(10), rtol=1e-6)
  np.testing.assert_allclose(task.normalize_loss(loss), 1.0, rtol=1e-6)


def test_mup_loss_decreases_with_adam():
  # Zero readout: only the readout moves at step 0, the rest follows (standard
  # parametrization is covered by test_tasks on mlp_digits_w32_d2).
  task = mlp.mlp_task(data=DATA, hidden=(16, 16), parametrization="mup")
  _, losses = _train(task, steps=40, lr=1e-1)
  assert np.all(np.isfinite(losses))
  assert losses[-5:].mean() < 0.8 * losses[:5].mean()


def test_batch_shapes_deterministic_and_scaled():
  task = mlp.mlp_task(data=DATA, batch_size=32)
  b1 = task.sample_batch(jax.random.PRNGKey(0), "inner_valid")
  b2 = task.sample_batch(jax.random.PRNGKey(0), "inner_valid")
  b3 = task.sample_batch(jax.random.PRNGKey(1), "inner_valid")
  assert jax.tree.map(lambda x: (x.shape, x.dtype), b1) == jax.tree.map(
      lambda x: (x.shape, x.dtype), task.abstract_batch)
  assert b1["x"].shape == (32, 64) and b1["x"].dtype == jnp.float32
  assert 0.0 <= float(b1["x"].min()) and float(b1["x"].max()) <= 1.0
  np.testing.assert_array_equal(b1["x"], b2["x"])
  assert not np.array_equal(b1["x"], b3["x"])
  # Rows come from the requested split.
  pool = DATA["inner_valid"]["image"].reshape(256, -1).astype(np.float32) / 255.0
  assert all(np.any(np.all(np.isclose(pool, row), axis=1)) for row in np.asarray(b1["x"]))


def test_family_seeds_change_init_and_data():
  fam = mlp.mlp_family(data=DATA, widths=(16,), depths=(1,), activations=("tanh",),
                       init_scale_range=(1.0, 1.0))
  key = jax.random.PRNGKey(0)
  static = fam.sample_static(key)

  @jax.jit
  def first_layer_and_batch(dynamic):
    task = fam.make_task(static, dynamic)
    return task.init(key)["linear_0"]["w"], task.batch(task.data, key, "train")["x"]

  base = {"init_seed": jnp.uint32(1), "data_seed": jnp.uint32(1), "init_scale": jnp.float32(1)}
  w0, x0 = first_layer_and_batch(base)
  w_init, x_init = first_layer_and_batch(dict(base, init_seed=jnp.uint32(2)))
  w_data, x_data = first_layer_and_batch(dict(base, data_seed=jnp.uint32(2)))
  w_scaled, x_scaled = first_layer_and_batch(dict(base, init_scale=jnp.float32(2)))
  assert not np.allclose(w0, w_init)
  np.testing.assert_array_equal(x0, x_init)
  np.testing.assert_array_equal(w0, w_data)
  assert not np.array_equal(x0, x_data)
  np.testing.assert_allclose(w_scaled, 2 * w0, rtol=1e-6)
  np.testing.assert_array_equal(x0, x_scaled)


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="swish2"), "Unknown activation"),
    (dict(parametrization="ntk"), "Unknown parametrization"),
    (dict(hidden=()), "at least one positive width"),
])
def test_bad_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mlp.mlp_task(data=DATA, **kwargs)


def test_mup_hidden_activation_scale_is_width_independent():
  # Fan-in init keeps per-coordinate activation RMS O(1) as the width grows 16x.
  # Averaged over 16 inits: at width 32 one init's RMS is noisy (positive pixels
  # make each unit's output track the sum of its weights).
  batch = mlp.mlp_task(data=DATA).sample_batch(jax.random.PRNGKey(0))
  keys = jax.random.split(jax.random.PRNGKey(0), 16)
  rms = []
  for width in (32, 512):
    task = mlp.mlp_task(data=DATA, hidden=(width, width), parametrization="mup")
    acts = jax.jit(jax.vmap(lambda key: mlp.activations_fn(task)(task.init(key), batch)))(keys)
    rms.append([float(jnp.sqrt(jnp.mean(acts[k] ** 2))) for k in ("linear_0", "linear_1")])
  np.testing.assert_allclose(rms[0], rms[1], rtol=0.15)


@pytest.mark.parametrize("name, dataset, hidden", [
    ("mlp_fmnist_w512_d2", "fashion_mnist", (512, 512)),  # 4x the meta-training widths.
    ("mlp_mnist1d_w64_d3", "mnist1d", (64, 64, 64)),
])
def test_leaderboard_v2_mlps_are_registered_with_their_shapes(name, dataset, hidden):
  task = tasks.get(name)
  assert task.metadata["dataset"] == dataset and task.metadata["hidden"] == hidden
  shapes = tasks.abstract_params(task)
  assert [shapes[f"linear_{i}"]["w"].shape[1] for i in range(len(hidden))] == list(hidden)
  assert task.error_rate is not None
