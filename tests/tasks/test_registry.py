"""The task registry: lookup errors, names, and the contract every entry must meet."""

import jax
import numpy as np
import pytest

import tasks
from tasks.base import ROLES, ParamInfo, Task, TaskFamily, num_params

# Entries of the model/quadratic/classic modules run by default; other modules' entries
# (amortized problems: costly eager builds, covered by their own tests) run with -m slow.
_FAST_PREFIXES = ("mlp_", "conv_", "logistic_", "transformer_", "rosenbrock", "rastrigin",
                  "ackley", "beale", "booth", "quadratic_d10_", "quadratic_d100_",
                  "quadratic_family", "quadratic_noisy_family")


def _params(names):
  return [pytest.param(n, marks=() if n.startswith(_FAST_PREFIXES) else pytest.mark.slow)
          for n in names]


def test_unknown_task_lists_close_matches():
  with pytest.raises(tasks.UnknownNameError, match="mlp_digits_w32_d2") as err:
    tasks.get("mlp_digit_w32_d2")
  assert "Did you mean" in str(err.value) and "Known tasks" in str(err.value)
  with pytest.raises(KeyError, match="quadratic_family"):
    tasks.get_family("quadratic_famly")


def test_names_contain_tasks_and_families():
  names = tasks.names()
  for name in ["mlp_digits_w32_d2", "quadratic_d10_cond10", "rosenbrock_d2", "logistic_digits",
               "conv_digits_c8x2", "transformer_text_d64_l2", "mlp_digits_w32_d2_family",
               "mlp_digits_family", "quadratic_family"]:
    assert name in names
  assert set(tasks.task_names()) | set(tasks.family_names()) == set(names)
  assert "quadratic_family" in tasks.family_names()
  assert "quadratic_family" not in tasks.task_names()


def test_registering_twice_fails():
  with pytest.raises(ValueError, match="already registered"):
    tasks.register_task("mlp_digits_w32_d2", lambda: None)


@pytest.mark.parametrize("name", _params(tasks.task_names()))
def test_task_contract(name):
  """Name round-trips; normalizer, abstract batch and μP info are consistent."""
  task = tasks.get(name)
  assert isinstance(task, Task) and task.name == name
  shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  if "num_params" in task.metadata:
    assert task.metadata["num_params"] == num_params(shapes)
  abstract = jax.eval_shape(lambda data, key: task.batch(data, key, "train"), task.data,
                            jax.random.PRNGKey(0))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract) == jax.tree.map(
      lambda x: (x.shape, x.dtype), task.abstract_batch)
  loss = jax.eval_shape(task.loss, shapes, task.abstract_batch, jax.random.PRNGKey(0))
  assert loss.shape == ()
  assert float(task.normalize_loss(np.nan)) == pytest.approx(1.5)
  if task.param_info is not None:
    info = task.param_info(shapes)
    leaves = jax.tree.leaves(info, is_leaf=lambda x: isinstance(x, ParamInfo))
    assert jax.tree.structure(info, is_leaf=lambda x: isinstance(x, ParamInfo)) == \
        jax.tree.structure(shapes)
    assert all(isinstance(i, ParamInfo) and i.role in ROLES for i in leaves)


@pytest.mark.parametrize("name", _params(tasks.family_names()))
def test_family_contract(name):
  """A sampled member traces: init, batch and a scalar loss (shapes only)."""
  family = tasks.get_family(name)
  assert isinstance(family, TaskFamily) and family.name == name
  cfg = family.sample_batch(jax.random.PRNGKey(0), 2)
  key = jax.random.PRNGKey(0)

  def member_loss(dynamic):
    task = family.make_task(cfg.static, dynamic)
    return task.loss(task.init(key), task.batch(task.data, key, "train"), key)

  loss = jax.eval_shape(jax.vmap(member_loss), cfg.dynamic)
  assert loss.shape == (2,)
