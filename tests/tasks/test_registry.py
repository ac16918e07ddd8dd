"""The task registry: lookup errors, names, and the contract every entry must meet."""

import jax
import numpy as np
import pytest

import tasks
from tasks.base import ROLES, ParamInfo, Task, TaskFamily, num_params
from tasks.registry import (DuplicateNameError, Registry, UnknownNameError,
                            unknown_name_message)

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
  assert "Did you mean" in str(err.value) and "Known: " in str(err.value)
  with pytest.raises(KeyError, match="quadratic_family"):
    tasks.get_family("quadratic_famly")


def test_task_and_family_names_are_not_interchangeable():
  with pytest.raises(tasks.UnknownNameError, match=r"task family.*get_family"):
    tasks.get("quadratic_family")
  with pytest.raises(tasks.UnknownNameError, match=r"a task, not a task family"):
    tasks.get_family("quadratic_d10_cond10")


# ---- the generic Registry type ------------------------------------------------------


def test_registry_register_get_names_contains():
  reg = Registry("widget")
  one, two = object(), object()
  assert reg.register("b_widget", one) is one
  assert reg.register("a_widget", two) is two
  assert reg.get("b_widget") is one and reg.get("a_widget") is two
  assert reg.names() == ["a_widget", "b_widget"]
  assert "a_widget" in reg and "c_widget" not in reg and len(reg) == 2


def test_registry_register_as_decorator():
  reg = Registry("factory")

  @reg.register("make_three")
  def make_three():
    return 3

  assert make_three() == 3  # the decorator returns the function itself
  assert reg.get("make_three")() == 3


def test_registry_unregister():
  reg = Registry("widget")
  obj = object()
  reg.register("w", obj)
  assert reg.unregister("w") is obj
  assert "w" not in reg and reg.names() == []
  with pytest.raises(UnknownNameError, match="Unknown widget 'w'"):
    reg.unregister("w")
  reg.register("w", object())  # the name is free again


def test_registry_duplicate_registration():
  reg = Registry("widget")
  first, second = object(), object()
  reg.register("w", first)
  with pytest.raises(DuplicateNameError, match="Widget 'w' is already registered"):
    reg.register("w", second)
  assert reg.get("w") is first  # the failed registration changed nothing
  assert reg.register("w", first) is first  # the same object again: harmless
  reg.register("w", second, overwrite=True)
  assert reg.get("w") is second
  with pytest.raises(ValueError, match="non-empty string"):
    reg.register("", first)


def test_registry_unknown_name_message():
  reg = Registry("widget")
  for name in ["adam", "adamw", "sgd", "momentum"]:
    reg.register(name, object())
  with pytest.raises(UnknownNameError) as err:
    reg.get("adma")
  msg = str(err.value)
  assert msg.startswith("Unknown widget 'adma'.")
  assert "Did you mean adam, adamw?" in msg
  assert msg.endswith("Known: adam, adamw, momentum, sgd.")
  # Catchable as a failed lookup and as a bad argument.
  assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
  # Nothing close: no suggestion, still every known name.
  msg = str(pytest.raises(UnknownNameError, reg.get, "zzzz").value)
  assert "Did you mean" not in msg and "Known: adam, adamw, momentum, sgd." in msg
  assert "Known: (none)." in str(pytest.raises(UnknownNameError, Registry("x").get, "y").value)


def test_unknown_name_message_for_plain_lookups():
  msg = unknown_name_message("feature", "momentm", ["grad", "momenta", "grad", "param"])
  assert msg == "Unknown feature 'momentm'. Did you mean momenta? Known: grad, momenta, param."


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
