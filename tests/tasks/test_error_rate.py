"""Task.error_rate of every classification task kind against a numpy reference.

Each check draws one small batch and random (non-zero) parameters, and compares the
task's error rate with ``mean(argmax(numpy logits) != label)``. Where the numpy
forward pass would repeat the module (conv, transformer), the logits come from the
module's forward function and the check is of the error computation and the batch
plumbing; relabelling the batch with the predicted classes must then give error 0,
and with any other class error 1.
"""

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from tasks import augment, common, conv, logistic, mlp, transformer
from tasks.base import SPLITS

IMAGES = common.synthetic_image_data(seed=0, n=64, shape=(8, 8, 1), n_classes=4)
KEY = jax.random.PRNGKey(3)


def _random_params(task, scale=1.0):
  """Random normal params of ``task``'s shapes (zero-initialised readouts get weights)."""
  shapes = tasks.abstract_params(task)
  leaves, treedef = jax.tree_util.tree_flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [scale * jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves)])


def _numpy_error(logits, labels):
  return float(np.mean(np.argmax(np.asarray(logits), axis=-1) != np.asarray(labels)))


def _relabelled(batch, label_key, predicted, n_classes):
  """(batch labelled with the predictions, batch labelled with another class)."""
  right = dict(batch, **{label_key: jnp.asarray(predicted, jnp.int32)})
  wrong = dict(batch, **{label_key: jnp.asarray((predicted + 1) % n_classes, jnp.int32)})
  return right, wrong


def _check_extremes(task, params, batch, label_key, logits, n_classes):
  right, wrong = _relabelled(batch, label_key, np.argmax(np.asarray(logits), -1), n_classes)
  assert float(task.error_rate(params, right, KEY)) == 0.0
  assert float(task.error_rate(params, wrong, KEY)) == 1.0


def _np_mlp_logits(params, x, multiplier):
  h = np.asarray(x, np.float64)
  depth = len(params) - 1
  for i in range(depth):
    layer = params[f"linear_{i}"]
    h = np.maximum(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]), 0.0)
  out = params[f"linear_{depth}"]
  return (h @ np.asarray(out["w"])) * multiplier + np.asarray(out["b"])


@pytest.mark.parametrize("parametrization", ["standard", "mup"])
def test_mlp_error_rate_matches_numpy(parametrization):
  task = mlp.mlp_task(hidden=(16, 16), batch_size=32, parametrization=parametrization,
                      data=IMAGES, name="mlp_small")
  params = _random_params(task, scale=16.0 if parametrization == "mup" else 1.0)
  batch = task.sample_batch(KEY, "test")
  logits = _np_mlp_logits(params, batch["x"], task.metadata["output_multiplier"])
  expected = _numpy_error(logits, batch["label"])
  assert 0.0 < expected < 1.0  # A check that could fail both ways.
  np.testing.assert_allclose(float(jax.jit(task.error_rate)(params, batch, KEY)), expected)
  _check_extremes(task, params, batch, "label", logits, 4)


def test_logistic_error_rate_matches_numpy():
  task = logistic.logistic_task(batch_size=32, data=IMAGES, name="logistic_small")
  params = _random_params(task)
  batch = task.sample_batch(KEY, "train")
  logits = np.asarray(batch["x"]) @ np.asarray(params["w"]) + np.asarray(params["b"])
  expected = _numpy_error(logits, batch["label"])
  assert 0.0 < expected < 1.0
  np.testing.assert_allclose(float(task.error_rate(params, batch, KEY)), expected)
  _check_extremes(task, params, batch, "label", logits, 4)


def test_synthetic_logistic_error_rate_matches_numpy():
  task = logistic.synthetic_logistic_task(dim=8, separability=2.0, batch_size=64)
  params = _random_params(task)
  batch = task.sample_batch(KEY, "train")
  logits = np.asarray(batch["x"]) @ np.asarray(params["w"]) + float(params["b"])
  expected = float(np.mean((logits > 0) != (np.asarray(batch["label"]) == 1)))
  assert 0.0 < expected < 1.0
  np.testing.assert_allclose(float(task.error_rate(params, batch, KEY)), expected)


def test_conv_error_rate_matches_numpy():
  task = conv.conv_task(channels=(4, 4), batch_size=32, data=IMAGES, name="conv_small")
  params = _random_params(task, scale=0.5)
  batch = task.sample_batch(KEY, "inner_valid")
  logits = conv.conv_forward(params, batch["image"])
  expected = _numpy_error(logits, batch["label"])
  assert 0.0 < expected < 1.0
  np.testing.assert_allclose(float(task.error_rate(params, batch, KEY)), expected)
  _check_extremes(task, params, batch, "label", logits, 4)


def test_transformer_error_rate_is_next_token_error():
  text = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 20, np.uint8)
  data = {s: {"tokens": jnp.asarray(text)} for s in SPLITS}
  task = transformer.transformer_task(data=data, d_model=16, num_layers=1, num_heads=2,
                                      seq_len=12, batch_size=4)
  params = _random_params(task, scale=0.3)
  batch = task.sample_batch(KEY, "train")
  cfg = transformer.TransformerConfig(16, 1, 2, 12)
  logits = transformer.transformer_forward(params, batch["inputs"], cfg)  # (B, T, V)
  # Random weights predict (almost) no target: keep the predicted token at a random
  # half of the positions (the logits depend on the inputs only).
  predicted = np.argmax(np.asarray(logits), -1)
  keep = np.random.default_rng(0).random(predicted.shape) < 0.5
  targets = np.where(keep, predicted, (predicted + 1) % 128)
  batch = dict(batch, targets=jnp.asarray(targets, jnp.int32))
  expected = _numpy_error(logits, targets)  # Over every position.
  assert 0.0 < expected < 1.0
  np.testing.assert_allclose(float(task.error_rate(params, batch, KEY)), expected)
  _check_extremes(task, params, batch, "targets", logits, 128)


def _haiku_forward(batch):
  return hk.Linear(4)(batch["image"].reshape(batch["image"].shape[0], -1) / 255.0)


def _ce(logits, batch):
  return common.softmax_cross_entropy(logits, batch["label"])


def _err(logits, batch):
  return common.classification_error(logits, batch["label"])


def test_from_haiku_error_fn():
  task = tasks.from_haiku("hk_linear", _haiku_forward, _ce, IMAGES, batch_size=32,
                          error_fn=_err)
  params = _random_params(task, scale=3.0)
  batch = task.sample_batch(KEY, "train")
  x = np.asarray(batch["image"], np.float64).reshape(32, -1) / 255.0
  lin = params["linear"]
  expected = _numpy_error(x @ np.asarray(lin["w"]) + np.asarray(lin["b"]), batch["label"])
  assert 0.0 < expected < 1.0
  np.testing.assert_allclose(float(task.error_rate(params, batch, KEY)), expected, atol=1e-6)
  # Without error_fn the task has none; the family passes it to its members.
  assert tasks.from_haiku("hk_plain", _haiku_forward, _ce, IMAGES, 32).error_rate is None
  family = tasks.from_haiku_family("hk_family", lambda width: _haiku_forward, _ce, IMAGES, 32,
                                   statics=[4], error_fn=_err)
  member = family.task(family.sample(KEY))
  assert member.error_rate is not None and member.metadata["family"] == "hk_family"


def test_augmentations_carry_the_error_rate():
  task = mlp.mlp_task(hidden=(8,), batch_size=16, data=IMAGES, name="mlp_aug")
  params = _random_params(task)
  batch = task.sample_batch(KEY, "train")
  base = float(task.error_rate(params, batch, KEY))

  # Reparameterization: the error of p' is the error of the original at scale * p'.
  reparam = augment.reparameterize(task, level="tensor", scale_range=(0.1, 10.0))
  p_prime = reparam.init(KEY)
  np.testing.assert_allclose(float(reparam.error_rate(p_prime, batch, KEY)),
                             float(task.error_rate(task.init(KEY), batch, KEY)), atol=1e-6)
  # Gradient maps and batch reduction leave the function unchanged.
  for wrapped in (augment.normalize_gradients(task), augment.gradient_noise(task, 0.1)):
    assert float(wrapped.error_rate(params, batch, KEY)) == base
  small = augment.reduce_batch(task, 8)
  small_batch = small.sample_batch(KEY, "train")
  assert float(small.error_rate(params, small_batch, KEY)) == float(
      task.error_rate(params, small_batch, KEY))
  bf16 = augment.bfloat16(task)
  assert abs(float(bf16.error_rate(params, batch, KEY)) - base) <= 2 / 16  # Rounding ties.
  # A task without an error rate stays without one.
  no_error = dataclasses.replace(task, error_rate=None)
  assert augment.apply(no_error, ["bfloat16", "reparameterize"]).error_rate is None


def test_classification_error_ties_and_shapes():
  logits = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
  labels = jnp.asarray([0, 2, 0, 1])
  # Tie at row 0 resolves to class 0 (right); rows 1 and 3 are wrong.
  assert float(common.classification_error(logits, labels)) == 0.5
  assert float(common.classification_error(logits[None], labels[None])) == 0.5
