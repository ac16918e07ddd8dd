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


def _user_arrays(n=200, classes=10, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 17, size=(n, 8, 8, 1)).astype(np.float32),
          "label": rng.integers(0, classes, size=(n,))}


def test_split_data_gives_the_four_splits_of_the_users_rows():
  arrays = _user_arrays()
  data = tasks.haiku_tasks.split_data(arrays, seed=1)
  assert tuple(data) == tasks.SPLITS
  sizes = {s: len(data[s]["label"]) for s in tasks.SPLITS}
  assert sizes == {"train": 140, "inner_valid": 20, "outer_valid": 20, "test": 20}
  # A permutation of the rows: every row lands in exactly one split, fields stay aligned.
  rows = np.concatenate([data[s]["image"].reshape(-1, 64) for s in tasks.SPLITS])
  labels = np.concatenate([data[s]["label"] for s in tasks.SPLITS])
  order = np.lexsort(rows.T)
  ref = np.lexsort(arrays["image"].reshape(-1, 64).T)
  np.testing.assert_array_equal(rows[order], arrays["image"].reshape(-1, 64)[ref])
  np.testing.assert_array_equal(labels[order], arrays["label"][ref])
  # The user's own test set is kept as is; fractions are rescaled over the rest.
  own = _user_arrays(n=30, seed=2)
  data = tasks.haiku_tasks.split_data(arrays, {"train": 8, "inner_valid": 1, "outer_valid": 1},
                                      test=own)
  assert [len(data[s]["label"]) for s in tasks.SPLITS] == [160, 20, 20, 30]
  task = tasks.from_haiku("hk_user", mlp_forward((8,)), ce, data, batch_size=16)
  assert task.sample_batch(jax.random.PRNGKey(0))["image"].shape == (16, 8, 8, 1)
  with pytest.raises(ValueError, match="too few"):
    tasks.haiku_tasks.split_data(_user_arrays(n=3))
  with pytest.raises(ValueError, match="same N"):
    tasks.haiku_tasks.split_data({"x": np.zeros((4, 2)), "label": np.zeros(5)})
  with pytest.raises(ValueError, match="split_data"):  # Unsplit arrays: the hint.
    tasks.from_haiku("hk_user", mlp_forward((8,)), ce, arrays, batch_size=16)


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d["train"]["label"].__setitem__(3, np.nan), "'train']['label'] has 1 non-finite"),
    (lambda d: d["test"]["label"].__setitem__(0, 12), "'test']['label'] holds label 12 but the "
     "model outputs 10 classes"),
    (lambda d: d["inner_valid"]["label"].__setitem__(0, -1), "negative label"),
    (lambda d: d["train"]["label"].__setitem__(0, 1.5), "non-integer"),
    (lambda d: d["outer_valid"]["image"].__setitem__(0, np.inf), "'outer_valid']['image'] has"),
])
def test_bad_labels_and_features_fail_naming_the_field(corrupt, message):
  arrays = _user_arrays()
  arrays["label"] = arrays["label"].astype(np.float32)
  data = tasks.haiku_tasks.split_data(arrays)
  corrupt(data)
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
    tasks.from_haiku("hk_bad", mlp_forward((8,)), ce, data, batch_size=16)
  if "model outputs" in message:  # Families check every member's number of outputs.
    with pytest.raises(ValueError, match="model outputs 10 classes"):
      tasks.from_haiku_family("hk_bad_family", mlp_forward, ce, data, 16, statics=[(4,), (8,)])
