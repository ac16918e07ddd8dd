"""tasks.from_haiku / from_haiku_family: haiku models as tasks, meta-trained on and
evaluated like the built-in ones."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tasks
from metaopt import lopt
from metaopt.meta import estimators
from metaopt.meta.truncation import TruncationSchedule
from metaopt.meta.unroll import InnerProblem
from metaopt.train import train
from tasks.common import softmax_cross_entropy


def mlp_forward(widths):
  def forward(batch):
    x = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 16.0
    return hk.nets.MLP(list(widths) + [10])(x)
  return forward


def conv_forward(batch):
  x = batch["image"].astype(jnp.float32) / 16.0  # (B, 8, 8, 1)
  x = jax.nn.relu(hk.Conv2D(8, 3)(x))
  return hk.Linear(10)(x.reshape(x.shape[0], -1))


def ce(logits, batch):
  return softmax_cross_entropy(logits, batch["label"])


@pytest.fixture(scope="module")
def digits():
  return tasks.common.load_dataset("digits")


def test_loss_is_the_haiku_model_on_a_sampled_batch(digits):
  model = hk.transform(mlp_forward((16,)))
  task = tasks.from_haiku("hk_mlp", model, ce, digits, batch_size=32)
  params = task.init(jax.random.PRNGKey(0))
  batch = task.sample_batch(jax.random.PRNGKey(1))
  assert batch["image"].shape[0] == 32
  # Independent reference: haiku's apply and a numpy cross-entropy.
  logits = np.asarray(model.apply(params, None, batch), np.float64)
  logp = logits - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1,
                                keepdims=True)) - logits.max(1, keepdims=True)
  ref = -np.mean(logp[np.arange(32), np.asarray(batch["label"])])
  np.testing.assert_allclose(task.loss(params, batch, jax.random.PRNGKey(2)), ref, rtol=1e-5)
  # Chance-level normalizer: log(10) maps to 1.
  np.testing.assert_allclose(task.normalize_loss(jnp.log(10.0)), 1.0, rtol=1e-6)
  res = train(task, optax.adam(1e-2), 100, eval_every=50)
  assert res.valid_loss[-1] < 0.5 * float(jnp.log(10.0))


def test_dense_param_info_roles():
  model = hk.transform(mlp_forward((16, 16)))
  params = model.init(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 64))})
  info = tasks.dense_param_info(params)
  roles = [(info[m]["w"].role, info[m]["w"].fan_in) for m in params]
  assert roles == [("input", 64), ("hidden", 16), ("output", 16)]
  assert all(info[m]["b"].role == "bias" for m in params)


def test_bad_data_is_refused():
  with pytest.raises(ValueError, match="lacks split"):
    tasks.from_haiku("x", mlp_forward((4,)), ce, {"train": {}}, batch_size=8)


def test_meta_train_on_a_haiku_family_then_help_an_unseen_haiku_model(digits):
  """PES meta-trains learnable Adam's hyper-parameters on haiku MLPs of two widths,
  starting from a learning rate 100x too small; the meta-trained rule then trains a
  haiku conv net (an architecture it never saw) far better than the initial rule."""
  family = tasks.from_haiku_family("hk_mlp_family", mlp_forward, ce, digits, batch_size=32,
                                   statics=[(16,), (32,)])
  opt = lopt.build("adam", {"learning_rate": 1e-4})
  problem = InnerProblem(family, family.sample_static(jax.random.PRNGKey(0)), opt,
                         TruncationSchedule("constant", 10, 40, 0, True), "train")
  est = estimators.build_estimator("pes", problem, 4, 0.05, "avg")
  theta = opt.init_meta_params(None)
  outer = optax.adam(0.3)
  outer_state = outer.init(theta)
  worker = est.init_worker_state(theta, jax.random.PRNGKey(1))
  step = jax.jit(est.compute_gradient)
  for i in range(10):
    grad, worker, metrics = step(theta, worker, family.make_task(problem.static, 0).data,
                                 jax.random.PRNGKey(100 + i))
    updates, outer_state = outer.update(grad, outer_state, theta)
    theta = optax.apply_updates(theta, updates)
  assert float(metrics["valid_fraction"]) == 1.0
  assert float(theta["log_lr"]) > np.log(1e-4) + 0.5  # The learning rate went up.

  conv = tasks.from_haiku("hk_conv", conv_forward, ce, digits, batch_size=32)
  before = train(conv, opt.transform(opt.init_meta_params(None)), 60, eval_every=60)
  after = train(conv, opt.transform(theta), 60, eval_every=60)
  assert after.final_valid_loss < 0.9 * before.final_valid_loss
