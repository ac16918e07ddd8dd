"""Every registered task trains and every family vmaps (the registry-wide behaviour).

Cheap entries run by default; the rest (bigger data, bigger models, other modules'
problems) are marked slow: ``pytest -m slow tests/tasks/test_tasks.py``.
"""

import jax
import numpy as np
import optax
import pytest

import tasks

#: Entries exercised in the default (fast) run: one or two per task kind.
FAST_TASKS = {"mlp_digits_w32_d2", "quadratic_d10_cond10", "rosenbrock_d2",
              "logistic_synthetic_d32_sep4", "conv_digits_c8x2"}
FAST_FAMILIES = {"mlp_digits_w32_d2_family"}
FAST_BATCHES = {"mlp_digits_w32_d2", "conv_digits_c8x2"}
LEARNING_RATES = (1e-1, 1e-2, 1e-3)
STEPS = 30


def _params(names, fast):
  return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _params(tasks.task_names(), FAST_TASKS))
def test_task_trains_with_adam(name):
  """Finite loss at init, and Adam lowers it within STEPS steps for some learning rate
  (vmapped over LEARNING_RATES: one compilation)."""
  task = tasks.get(name)

  @jax.jit
  def run(data, key, lr):
    opt = optax.adam(lr)
    k_init, k_steps = jax.random.split(key)
    params = task.init(k_init)

    def step(carry, k):
      params, state = carry
      kb, kl = jax.random.split(k)
      loss, grads = jax.value_and_grad(task.loss)(params, task.batch(data, kb, "train"), kl)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss

    _, losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_steps, STEPS))
    return losses

  losses = np.asarray(jax.vmap(run, in_axes=(None, None, 0))(
      task.data, jax.random.PRNGKey(0), np.asarray(LEARNING_RATES, np.float32)))
  assert np.all(np.isfinite(losses[:, 0])), f"non-finite initial loss: {losses[:, 0]}"
  improvement = losses[:, -5:].mean(axis=1) / losses[:, :1].mean(axis=1)
  assert np.nanmin(improvement) < 0.9, f"loss ratio final/initial per lr: {improvement}"


@pytest.mark.parametrize("name", _params(tasks.family_names(), FAST_FAMILIES))
def test_family_vmaps(name):
  """sample_batch(key, 4): a jitted vmap of value_and_grad gives 4 finite, different
  results; the same key gives the same configs. (Zero-initialised models, e.g. μP
  readouts or logistic regression, share the initial loss; their gradients differ.)"""
  family = tasks.get_family(name)
  cfg = family.sample_batch(jax.random.PRNGKey(0), 4)
  again = family.sample_batch(jax.random.PRNGKey(0), 4)
  assert cfg.static == again.static
  jax.tree.map(np.testing.assert_array_equal, cfg.dynamic, again.dynamic)
  data = family.make_task(cfg.static, jax.tree.map(lambda x: x[0], cfg.dynamic)).data

  @jax.jit
  def losses(dynamic, data, key):
    def one(dyn):
      task = family.make_task(cfg.static, dyn)
      kb, kl = jax.random.split(key)
      loss, grads = jax.value_and_grad(task.loss)(task.init(key), task.batch(data, kb, "train"),
                                                  kl)
      return loss, optax.tree.norm(grads)
    return jax.vmap(one)(dynamic)

  loss, gnorm = losses(cfg.dynamic, data, jax.random.PRNGKey(1))
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(gnorm))
  assert len(set(zip(np.asarray(loss).tolist(), np.asarray(gnorm).tolist()))) == 4


@pytest.mark.parametrize("name", _params(tasks.task_names(), FAST_BATCHES))
def test_batches_deterministic_and_match_abstract(name):
  task = tasks.get(name)
  all_splits = jax.jit(lambda data, key: {s: task.batch(data, key, s) for s in tasks.SPLITS})
  b1 = all_splits(task.data, jax.random.PRNGKey(0))
  b2 = all_splits(task.data, jax.random.PRNGKey(0))
  jax.tree.map(np.testing.assert_array_equal, b1, b2)
  spec = jax.tree.map(lambda x: (x.shape, x.dtype), task.abstract_batch)
  for split in tasks.SPLITS:
    assert jax.tree.map(lambda x: (x.shape, x.dtype), b1[split]) == spec
