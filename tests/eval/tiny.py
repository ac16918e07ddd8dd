"""Tiny test-only tasks and suites for the leaderboard tests (milliseconds per run)."""

import jax
import jax.numpy as jnp
import numpy as np

import tasks
from tasks.base import SPLITS, ParamInfo, Task, make_normalizer

LINREG = "test_eval_linreg_d4"


def linreg_task(name: str = LINREG, dim: int = 4, n: int = 64, batch: int = 16) -> Task:
  """Noisy linear regression: ``y = x @ w* + 0.1 noise``; params ``{"w": (dim,), "b": ()}``."""
  rng = np.random.default_rng(0)
  w_true = rng.normal(size=dim).astype(np.float32)
  data = {}
  for i, split in enumerate(SPLITS):
    x = np.random.default_rng(i + 1).normal(size=(n, dim)).astype(np.float32)
    y = x @ w_true + 0.1 * np.random.default_rng(i + 10).normal(size=n).astype(np.float32)
    data[split] = {"x": x, "y": y.astype(np.float32)}

  def init(key):
    return {"w": 0.01 * jax.random.normal(key, (dim,)), "b": jnp.zeros(())}

  def loss(params, b, key):
    del key
    pred = b["x"] @ params["w"] + params["b"]
    return jnp.mean((pred - b["y"]) ** 2)

  def sample(d, key, split):
    idx = jax.random.randint(key, (batch,), 0, n)
    return {"x": d[split]["x"][idx], "y": d[split]["y"][idx]}

  return Task(
      name=name, init=init, loss=loss, data=jax.tree_util.tree_map(jnp.asarray, data),
      batch=sample,
      abstract_batch={"x": jax.ShapeDtypeStruct((batch, dim), jnp.float32),
                      "y": jax.ShapeDtypeStruct((batch,), jnp.float32)},
      normalize_loss=make_normalizer(float(np.sum(w_true ** 2))),
      param_info=lambda p: {"w": ParamInfo("input", dim, 1), "b": ParamInfo("bias")},
      metadata={"family": "test_eval_linreg_family"})


def register() -> None:
  if LINREG not in tasks.task_names():
    tasks.register_task(LINREG, linreg_task)


def unregister() -> None:
  """Removes the test task so later tests see the real registry."""
  if LINREG in tasks.task_names():
    tasks.unregister_task(LINREG)


def suite_content(name="tiny", steps=30, eval_every=10, seeds=(0, 1, 2), trials=2,
                  target=0.5):
  """A one-task suite with a frozen target (the protocol of every suite)."""
  return {
      "name": name, "version": 1, "protocol": "algoperf", "description": "test suite",
      "seeds": list(seeds), "trials": trials, "tuning_seed": 3000, "eval_batches": 2,
      "speedup_reference": ["adam"],
      "target_setting": {"seeds": [1000, 1001, 1002, 1003, 1004], "tuning_seed": 2000,
                         "trials": 3, "baselines": ["adam"]},
      "tasks": [{"task": LINREG, "steps": steps, "eval_every": eval_every,
                 "families": ["test_eval_linreg_family"],
                 "target": {"valid_loss": target, "setter": "adam"}}],
  }
