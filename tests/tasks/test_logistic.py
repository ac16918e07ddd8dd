"""Logistic regression tasks: loss against scikit-learn, synthetic teacher, family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss

from tasks import common, logistic

DATA = common.synthetic_image_data(seed=1, n=128, shape=(4, 4, 1), n_classes=3)


def test_multinomial_loss_matches_sklearn():
  task = logistic.logistic_task(data=DATA, batch_size=64, l2=0.1)
  rng = np.random.default_rng(0)
  params = {"w": (0.3 * rng.normal(size=(16, 3))).astype(np.float32),
            "b": (0.3 * rng.normal(size=3)).astype(np.float32)}
  batch = jax.tree.map(np.asarray, task.sample_batch(jax.random.PRNGKey(1)))
  logits = batch["x"].astype(np.float64) @ params["w"] + params["b"]
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  expected = log_loss(np.asarray(batch["label"]), probs, labels=[0, 1, 2])
  expected += 0.05 * float(np.sum(np.asarray(params["w"], np.float64) ** 2))
  np.testing.assert_allclose(jax.jit(task.loss)(params, batch, None), expected, rtol=1e-5)
  info = task.param_info(params)
  assert (info["w"].role, info["w"].fan_in, info["w"].fan_out) == ("output", 16, 3)


def test_synthetic_labels_follow_teacher():
  task = logistic.synthetic_logistic_task(dim=8, separability=3.0, batch_size=4096)
  batch = jax.tree.map(np.asarray, task.sample_batch(jax.random.PRNGKey(0)))
  u = np.asarray(logistic.teacher(8, 0), np.float64)
  np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-6)
  p = 1.0 / (1.0 + np.exp(-3.0 * batch["x"] @ u))
  # Mean label equals mean predicted probability within sampling error.
  assert abs(float(np.mean(batch["label"]) - np.mean(p))) < 0.03
  loss = jax.jit(task.loss)
  # The teacher's own weights beat the zero init by a wide margin (expected loss).
  teacher_loss = loss({"w": 3.0 * u.astype(np.float32), "b": np.float32(0)}, batch, None)
  zero_loss = loss(task.init(None), batch, None)
  np.testing.assert_allclose(zero_loss, np.log(2.0), rtol=1e-6)
  assert float(teacher_loss) < 0.75 * float(zero_loss)
  # Gradient against a float64 numpy closed form: mean (sigmoid(z) - y) [x, 1].
  w, b = (0.1 * u).astype(np.float32), np.float32(0.2)
  g = jax.jit(jax.grad(task.loss))({"w": w, "b": b}, batch, None)
  r = 1.0 / (1.0 + np.exp(-(batch["x"] @ w.astype(np.float64) + b))) - batch["label"]
  np.testing.assert_allclose(g["w"], batch["x"].T @ r / r.size, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(g["b"], r.mean(), rtol=1e-3, atol=1e-5)


def test_synthetic_splits_differ_and_are_deterministic():
  task = logistic.synthetic_logistic_task(dim=4)
  key = jax.random.PRNGKey(0)
  b1, b2 = task.sample_batch(key, "train"), task.sample_batch(key, "train")
  np.testing.assert_array_equal(b1["x"], b2["x"])
  assert not np.array_equal(b1["x"], task.sample_batch(key, "test")["x"])
  assert jax.tree.map(lambda x: (x.shape, x.dtype), b1) == jax.tree.map(
      lambda x: (x.shape, x.dtype), task.abstract_batch)


def test_family_vmaps():
  fam = logistic.synthetic_logistic_family(dims=(8,))
  cfg = fam.sample_batch(jax.random.PRNGKey(0), 4)

  @jax.jit
  def run(dynamic, key):
    def one(dyn):
      task = fam.make_task(cfg.static, dyn)
      params = {"w": jnp.ones((8,)), "b": jnp.zeros(())}
      return jax.value_and_grad(task.loss)(params, task.batch(task.data, key, "train"), key)[0]
    return jax.vmap(one)(dynamic)

  loss = run(cfg.dynamic, jax.random.PRNGKey(1))
  assert np.all(np.isfinite(loss)) and len(np.unique(np.asarray(loss))) == 4


def test_bad_config_errors():
  with pytest.raises(ValueError, match="separability"):
    logistic.synthetic_logistic_task(dim=4, separability=0.0)
  with pytest.raises(ValueError, match="separability_range"):
    logistic.synthetic_logistic_family(separability_range=(2.0, 1.0))
