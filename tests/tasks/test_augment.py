"""tasks.augment: each wrapper changes exactly what it should, tasks and families."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import Task, TaskFamily, augment, make_normalizer

DIM, OUT, BATCH, N = 5, 3, 8, 64


def _quadratic(weight=1.0, record=None, name="quad") -> Task:
  """Linear least squares with two tensors; ``record`` collects the dtypes it sees."""

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (DIM, OUT)), "b": jax.random.normal(k2, (OUT,))}

  def loss(params, batch, key):
    if record is not None:
      record.append({"w": params["w"].dtype, "x": batch["x"].dtype,
                     "label": batch["label"].dtype})
    pred = batch["x"] @ params["w"] + params["b"]
    per_example = 0.5 * jnp.sum(jnp.square(pred - batch["y"]), -1)
    return weight * jnp.mean(per_example + 0.0 * batch["label"])

  def batch(data, key, split):
    idx = jax.random.randint(key, (BATCH,), 0, N)
    return {"x": data["x"][idx], "y": data["y"][idx], "label": data["label"][idx]}

  rng = np.random.default_rng(0)
  data = {"x": jnp.asarray(rng.normal(size=(N, DIM)), jnp.float32),
          "y": jnp.asarray(rng.normal(size=(N, OUT)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 3, N), jnp.int32)}
  abstract = {"x": jax.ShapeDtypeStruct((BATCH, DIM), jnp.float32),
              "y": jax.ShapeDtypeStruct((BATCH, OUT), jnp.float32),
              "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
  return Task(name=name, init=init, loss=loss, data=data, batch=batch,
              abstract_batch=abstract, normalize_loss=make_normalizer(1.0))


def _family() -> TaskFamily:
  return TaskFamily(
      name="quadfam", sample_static=lambda key: None,
      sample_dynamic=lambda key, static: {
          "weight": jax.random.uniform(key, (), minval=0.5, maxval=2.0)},
      make_task=lambda static, dynamic: _quadratic(dynamic["weight"], name="quadfam"))


@pytest.fixture(scope="module")
def setup():
  task = _quadratic()
  params = task.init(jax.random.PRNGKey(1))
  batch = task.sample_batch(jax.random.PRNGKey(2))
  return task, params, batch, jax.random.PRNGKey(3)


def _norm(x):
  return float(jnp.sqrt(jnp.sum(jnp.square(x))))


# --- reparameterize ------------------------------------------------------------


@pytest.mark.parametrize("level", augment.LEVELS)
def test_reparam_loss_and_chain_rule(setup, level):
  task, params, batch, key = setup
  wrapped = augment.reparameterize(task, level=level, seed=7)
  assert wrapped.name == f"quad+reparam_{level}"
  scales = augment.sample_scales(jax.random.PRNGKey(7), params, level)
  if level == "parameter":
    assert scales["w"].shape == (DIM, OUT)
  elif level == "global":
    assert float(scales["w"]) == float(scales["b"])
  else:
    assert scales["w"].shape == () and float(scales["w"]) != float(scales["b"])
  # Corresponding points p = s * p' have equal losses ...
  p_prime = jax.tree_util.tree_map(lambda p, s: p / s, params, scales)
  np.testing.assert_allclose(wrapped.loss(p_prime, batch, key), task.loss(params, batch, key),
                             rtol=1e-5)
  # ... and the gradient follows the chain rule: dL'/dp' = s * dL/dp.
  g = jax.grad(task.loss)(params, batch, key)
  g_prime = jax.grad(wrapped.loss)(p_prime, batch, key)
  for name in params:
    np.testing.assert_allclose(g_prime[name], scales[name] * g[name], rtol=1e-4, atol=1e-6)


def test_reparam_init_is_same_function(setup):
  task, _, batch, key = setup
  wrapped = augment.reparameterize(task, level="parameter")
  k = jax.random.PRNGKey(11)
  np.testing.assert_allclose(wrapped.loss(wrapped.init(k), batch, key),
                             task.loss(task.init(k), batch, key), rtol=1e-5)
  assert not np.allclose(wrapped.init(k)["w"], task.init(k)["w"])


def test_reparam_bad_level():
  with pytest.raises(ValueError, match="global"):
    augment.reparameterize(_quadratic(), level="layer")
  with pytest.raises(ValueError, match="low <= high"):
    augment.reparameterize(_quadratic(), scale_range=(10.0, 1.0))


# --- reduce_batch --------------------------------------------------------------


def test_reduce_batch(setup):
  task, params, _, key = setup
  small = augment.reduce_batch(task, 3)
  assert small.name == "quad+batch3"
  k = jax.random.PRNGKey(5)
  full, cut = task.sample_batch(k), small.sample_batch(k)
  for name in full:
    assert cut[name].shape[0] == 3 == small.abstract_batch[name].shape[0]
    np.testing.assert_array_equal(cut[name], full[name][:3])
  assert jnp.isfinite(small.loss(params, cut, key))
  with pytest.raises(ValueError, match="at most 8"):
    augment.reduce_batch(task, 9)


# --- bfloat16 ------------------------------------------------------------------


def test_bfloat16_casts_inside(setup):
  _, params, batch, key = setup
  seen = []
  task = _quadratic(record=seen)
  wrapped = augment.bfloat16(task)
  assert wrapped.name == "quad+bf16"
  value = wrapped.loss(params, batch, key)
  assert seen[-1] == {"w": jnp.bfloat16, "x": jnp.bfloat16, "label": jnp.int32}
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, task.loss(params, batch, key), rtol=3e-2)
  grads = jax.grad(wrapped.loss)(params, batch, key)
  assert grads["w"].dtype == jnp.float32  # the optimizer keeps float32 params
  np.testing.assert_allclose(grads["w"], jax.grad(task.loss)(params, batch, key)["w"],
                             rtol=5e-2, atol=5e-2)


# --- normalize_gradients -------------------------------------------------------


def test_normalized_gradients(setup):
  task, params, batch, key = setup
  wrapped = augment.normalize_gradients(task)
  assert wrapped.name == "quad+gradnorm"
  value, grads = jax.jit(jax.value_and_grad(wrapped.loss))(params, batch, key)
  ref = jax.grad(task.loss)(params, batch, key)
  np.testing.assert_allclose(value, task.loss(params, batch, key), rtol=1e-6)
  for name in params:
    assert abs(_norm(grads[name]) - 1.0) < 1e-5
    np.testing.assert_allclose(grads[name], ref[name] / _norm(ref[name]), rtol=1e-5, atol=1e-7)
  # The cotangent still scales the gradient.
  doubled = jax.grad(lambda p: 2.0 * wrapped.loss(p, batch, key))(params)
  np.testing.assert_allclose(doubled["b"], 2.0 * grads["b"], rtol=1e-6)


# --- gradient_noise ------------------------------------------------------------


def test_gradient_noise_statistics(setup):
  task, params, batch, _ = setup
  scale = 0.5
  wrapped = augment.gradient_noise(task, scale)
  assert wrapped.name == "quad+gradnoise"
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  grads = jax.jit(jax.vmap(jax.grad(wrapped.loss), in_axes=(None, None, 0)))(params, batch, keys)
  clean = jax.grad(task.loss)(params, batch, keys[0])
  for name in params:
    # Mean over keys approaches the clean gradient (4 standard errors), std the scale.
    np.testing.assert_allclose(grads[name].mean(0), clean[name],
                               atol=4 * scale / np.sqrt(len(keys)))
    np.testing.assert_allclose(grads[name].std(0), scale, rtol=0.1)
  # Same key, same noise; the loss value is untouched.
  g1 = jax.grad(wrapped.loss)(params, batch, keys[1])
  np.testing.assert_allclose(g1["w"], grads["w"][1], rtol=1e-6)  # jit vs eager rounding
  np.testing.assert_allclose(wrapped.loss(params, batch, keys[1]),
                             task.loss(params, batch, keys[1]), rtol=1e-6)


def test_gradient_noise_bad_scale():
  with pytest.raises(ValueError, match="scale >= 0"):
    augment.gradient_noise(_quadratic(), -1.0)


def test_wrappers_reject_non_tasks():
  with pytest.raises(TypeError, match="Task or tasks.TaskFamily"):
    augment.bfloat16("quad")


def test_names_compose(setup):
  task = setup[0]
  both = augment.bfloat16(augment.reduce_batch(task, 4))
  assert both.name == "quad+batch4+bf16"
  assert both.metadata["augmentations"] == ("batch4", "bf16")


# --- families ------------------------------------------------------------------


def _vmapped_grads(family, num_tasks=3):
  cfg = family.sample_batch(jax.random.PRNGKey(0), num_tasks)
  probe = family.task(jax.tree_util.tree_map(lambda x: x[0], cfg))
  params = probe.init(jax.random.PRNGKey(1))
  batch = probe.sample_batch(jax.random.PRNGKey(2))

  def grad_one(dynamic):
    task = family.make_task(cfg.static, dynamic)
    return jax.value_and_grad(task.loss)(params, batch, jax.random.PRNGKey(3))

  return cfg, probe, jax.jit(jax.vmap(grad_one))(cfg.dynamic)


@pytest.mark.parametrize("wrap", [
    lambda f: augment.reparameterize(f, level="tensor"),
    lambda f: augment.bfloat16(f),
    lambda f: augment.normalize_gradients(f),
    lambda f: augment.gradient_noise(f, (0.01, 1.0)),
    lambda f: augment.reduce_batch(f, (2, 4)),
], ids=["reparam", "bf16", "gradnorm", "gradnoise", "batch"])
def test_family_augmentation_vmaps(wrap):
  family = _family()
  augmented = wrap(family)
  assert isinstance(augmented, TaskFamily) and augmented.name.startswith("quadfam+")
  cfg, probe, (values, grads) = _vmapped_grads(augmented)
  assert values.shape == (3,) and grads["w"].shape == (3, DIM, OUT)
  assert np.all(np.isfinite(values))
  assert probe.name.startswith("quadfam+" + augmented.name.split("+")[1][:5])
  # Tasks differ through the inner family's sampled weight.
  assert len(set(np.round(np.asarray(values), 5).tolist())) == 3


def test_family_keeps_inner_sample():
  """Augmenting does not change which inner task a key samples."""
  family = _family()
  key = jax.random.PRNGKey(4)
  plain = family.sample(key)
  noisy = augment.gradient_noise(family, (0.01, 1.0)).sample(key)
  np.testing.assert_array_equal(noisy.dynamic["task"]["weight"], plain.dynamic["weight"])


def test_family_hparams_in_dynamic():
  family = augment.gradient_noise(_family(), (0.01, 1.0))
  cfg = family.sample_batch(jax.random.PRNGKey(0), 16)
  scales = np.asarray(cfg.dynamic["augment"])
  assert scales.shape == (16,) and np.all((scales >= 0.01) & (scales <= 1.0))
  assert len(set(scales.tolist())) == 16


def test_family_reduce_batch_static():
  family = augment.reduce_batch(_family(), (2, 4))
  sizes = {family.sample_static(jax.random.PRNGKey(i))[1] for i in range(20)}
  assert sizes == {2, 4}
  cfg = family.sample(jax.random.PRNGKey(0))
  task = family.task(cfg)
  assert task.sample_batch(jax.random.PRNGKey(0))["x"].shape[0] == cfg.static[1]


def test_meta_gradient_through_custom_vjp(setup):
  """Differentiating through one normalized-gradient SGD step matches finite differences."""
  task, params, batch, key = setup
  wrapped = augment.normalize_gradients(task)

  def after_one_step(lr):
    grads = jax.grad(wrapped.loss)(params, batch, key)
    return task.loss(jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), batch, key)

  meta_grad = jax.jit(jax.grad(after_one_step))(0.1)
  h = 1e-2  # the loss is quadratic in lr, so central differences are exact up to rounding
  finite = (after_one_step(0.1 + h) - after_one_step(0.1 - h)) / (2 * h)
  np.testing.assert_allclose(meta_grad, finite, rtol=1e-3)


def test_apply_from_config(setup):
  task, params, batch, key = setup
  wrapped = augment.apply(task, [{"name": "reduce_batch", "batch_size": 4},
                                 {"name": "gradient_noise", "scale": 0.0}, "bfloat16"])
  assert wrapped.name == "quad+batch4+gradnoise+bf16"
  family = augment.apply(_family(), [{"name": "gradient_noise", "scale": [0.001, 0.1]}])
  assert family.name == "quadfam+gradnoise"
  with pytest.raises(KeyError, match="normalize_gradients"):
    augment.apply(task, ["normalise_gradients"])
  with pytest.raises(ValueError, match="has no option.*'levl'.*'level'"):
    augment.apply(task, [{"name": "reparameterize", "levl": "tensor"}])
