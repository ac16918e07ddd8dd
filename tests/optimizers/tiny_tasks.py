"""Tiny self-contained tasks for the optimizer, train and CLI tests (no datasets)."""

import jax
import jax.numpy as jnp
import numpy as np

import tasks
from tasks.base import SPLITS, Task, log_normalizer

LINREG_NAME = "test_tiny_linreg"


def diag_quadratic(diag=(1.0, 10.0), init=1.0, name="test_diag_quadratic") -> Task:
  """``0.5 * sum(diag * x**2)`` from ``x = init``; data-free, deterministic."""
  d = jnp.asarray(diag, jnp.float32)

  return Task(
      name=name,
      init=lambda key: {"x": jnp.full(d.shape, init, jnp.float32)},
      loss=lambda params, batch, key: 0.5 * jnp.sum(d * params["x"] ** 2),
      data={},
      batch=lambda data, key, split: jnp.zeros(()),
      abstract_batch=jax.ShapeDtypeStruct((), jnp.float32),
      normalize_loss=log_normalizer(0.5 * float(jnp.sum(d)) * init ** 2),
  )


def linreg(n=64, dim=4, batch_size=16, noise=0.1) -> Task:
  """Linear regression with random init and random mini-batches; one array per split."""
  rng = np.random.default_rng(0)
  w_true = rng.normal(size=(dim,)).astype(np.float32)
  data = {}
  for i, split in enumerate(SPLITS):
    x = np.random.default_rng(i + 1).normal(size=(n, dim)).astype(np.float32)
    y = x @ w_true + noise * np.random.default_rng(i + 11).normal(size=(n,))
    data[split] = {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.float32)}

  def batch(data, key, split):
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {"x": data[split]["x"][idx], "y": data[split]["y"][idx]}

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (dim, 1)), "b": 0.1 * jax.random.normal(k2, (1,))}

  def loss(params, batch, key):
    pred = (batch["x"] @ params["w"])[:, 0] + params["b"][0]
    return jnp.mean((pred - batch["y"]) ** 2)

  return Task(
      name=LINREG_NAME, init=init, loss=loss, data=data, batch=batch,
      abstract_batch={"x": jax.ShapeDtypeStruct((batch_size, dim), jnp.float32),
                      "y": jax.ShapeDtypeStruct((batch_size,), jnp.float32)},
      normalize_loss=log_normalizer(1.0))


def register_linreg() -> str:
  """Registers ``linreg`` under ``LINREG_NAME`` once; returns the name."""
  if LINREG_NAME not in tasks.task_names():
    tasks.register_task(LINREG_NAME, linreg)
  return LINREG_NAME
