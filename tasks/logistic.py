"""Logistic regression: multinomial on datasets, binary on a synthetic teacher.

Dataset tasks (``logistic_digits``, ``logistic_mnist1d``...): features flattened and
scaled as in ``tasks.mlp`` (``{"x": (B, D), "label": (B,)}``), params ``{"w": (D, C),
"b": (C,)}`` initialised at zero (the problem is convex; zero is the usual start), loss
mean softmax cross-entropy ``+ l2/2 ||w||^2``.

Synthetic tasks: ``x ~ N(0, I_D)``, ``y ~ Bernoulli(sigmoid(separability * u'x))``
with a random unit teacher ``u``; an endless stream of fresh examples (each split a
different stream). Larger ``separability`` means cleaner labels and a larger optimal
``||w||`` (slower, worse-conditioned optimization). Params ``{"w": (D,), "b": ()}``;
loss mean binary cross-entropy on logits ``x'w + b``.

``error_rate`` (both kinds): the fraction of examples whose predicted class (arg-max
logit; positive logit for the binary tasks) is not the label.

``param_info``: ``w`` is the readout (``output``, fan_in ``D``), ``b`` a ``bias``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from tasks import common
from tasks.base import SYNTHETIC, ParamInfo, Task, TaskFamily, make_normalizer
from tasks.registry import register_family, register_task


def logistic_task(dataset: str = "digits", batch_size: int = 128, l2: float = 0.0,
                  name: Optional[str] = None, data=None) -> Task:
  """Multinomial logistic regression on a ``tasks.datasets`` classification dataset."""
  if batch_size < 1 or l2 < 0:
    raise ValueError(f"Need batch_size >= 1 and l2 >= 0, got {batch_size}, {l2}.")
  if data is None:
    data = common.load_dataset(dataset)
  dim, n_classes = common.feature_dim(data), common.num_classes(data)

  def init(key):
    del key  # Convex problem: the standard start is zero.
    return {"w": jnp.zeros((dim, n_classes), jnp.float32),
            "b": jnp.zeros((n_classes,), jnp.float32)}

  def loss(params, batch, key):
    del key
    logits = batch["x"] @ params["w"] + params["b"]
    return (common.softmax_cross_entropy(logits, batch["label"])
            + 0.5 * l2 * jnp.sum(params["w"] ** 2))

  def error_rate(params, batch, key):
    del key
    return common.classification_error(batch["x"] @ params["w"] + params["b"], batch["label"])

  def batch(data, key, split):
    return common.flat_classification_batch(data, key, split, batch_size)

  name = name or f"logistic_{common.dataset_tag(dataset)}" + (f"_l2{l2:g}" if l2 else "")
  return Task(
      name=name, init=init, loss=loss, data=data, batch=batch,
      abstract_batch=common.abstract_flat_classification_batch(data, batch_size),
      normalize_loss=common.classification_normalizer(n_classes),
      param_info=lambda params: {"w": ParamInfo("output", dim, n_classes),
                                 "b": ParamInfo("bias", 1, n_classes)},
      metadata={"architecture": "linear", "dataset": dataset, "l2": l2,
                "batch_size": batch_size, "num_classes": n_classes,
                "num_params": dim * n_classes + n_classes},
      error_rate=error_rate, eval_batches=common.flat_classification_eval)


def teacher(dim: int, teacher_seed: Any) -> jax.Array:
  """The unit-norm teacher direction ``u`` for ``teacher_seed`` (may be traced)."""
  u = jax.random.normal(common.seed_key(jax.random.PRNGKey(1), teacher_seed), (dim,))
  return u / jnp.linalg.norm(u)


def build_synthetic_task(name: str, dim: int, separability: Any, teacher_seed: Any,
                         data_seed: Any = None, batch_size: int = 128,
                         metadata: Optional[Dict[str, Any]] = None) -> Task:
  """Binary logistic regression on the synthetic teacher stream (see module docstring)."""
  u = teacher(dim, teacher_seed)

  def init(key):
    del key
    return {"w": jnp.zeros((dim,), jnp.float32), "b": jnp.zeros((), jnp.float32)}

  def loss(params, batch, key):
    del key
    logits = batch["x"] @ params["w"] + params["b"]
    y = batch["label"].astype(jnp.float32)
    return -jnp.mean(y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits))

  def error_rate(params, batch, key):
    del key
    predicted = (batch["x"] @ params["w"] + params["b"]) > 0
    return jnp.mean((predicted != (batch["label"] > 0)).astype(jnp.float32))

  def batch(data, key, split):
    del data
    key = jax.random.fold_in(common.seed_key(key, data_seed), common.SPLIT_IDS[split])
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (batch_size, dim), jnp.float32)
    label = jax.random.bernoulli(ky, jax.nn.sigmoid(separability * (x @ u)))
    return {"x": x, "label": label.astype(jnp.int32)}

  meta = {"architecture": "linear", "dataset": SYNTHETIC, "dim": dim,
          "batch_size": batch_size, "num_classes": 2, "num_params": dim + 1}
  meta.update(metadata or {})
  return Task(
      name=name, init=init, loss=loss, data={}, batch=batch,
      abstract_batch={"x": jax.ShapeDtypeStruct((batch_size, dim), jnp.float32),
                      "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)},
      normalize_loss=make_normalizer(math.log(2.0)),
      param_info=lambda params: {"w": ParamInfo("output", dim, 1),
                                 "b": ParamInfo("bias", 1, 1)},
      metadata=meta, error_rate=error_rate)


def synthetic_logistic_task(dim: int = 32, separability: float = 4.0, seed: int = 0,
                            batch_size: int = 128, name: Optional[str] = None) -> Task:
  """A fixed synthetic binary logistic regression (teacher from ``seed``)."""
  if dim < 1 or separability <= 0:
    raise ValueError(f"Need dim >= 1 and separability > 0, got {dim}, {separability}.")
  return build_synthetic_task(name or f"logistic_synthetic_d{dim}_sep{separability:g}", dim,
                              separability, seed, batch_size=batch_size,
                              metadata={"separability": separability, "seed": seed})


def synthetic_logistic_family(dims: Sequence[int] = (8, 32, 128),
                              separability_range: Tuple[float, float] = (0.5, 20.0),
                              batch_size: int = 128,
                              name: str = "logistic_synthetic_family") -> TaskFamily:
  """Static: ``dim`` from ``dims``. Dynamic: ``separability`` (log-uniform on
  ``separability_range``), ``teacher_seed`` and ``data_seed`` (uint32)."""
  lo, hi = separability_range
  if not 0 < lo <= hi:
    raise ValueError(f"separability_range must satisfy 0 < low <= high, got {(lo, hi)}.")

  def sample_dynamic(key, static):
    del static
    k1, k2, k3 = jax.random.split(key, 3)
    return {"separability": common.log_uniform(k1, lo, hi),
            "teacher_seed": common.random_seed(k2), "data_seed": common.random_seed(k3)}

  def make_task(dim, dynamic):
    return build_synthetic_task(f"{name}/logistic_synthetic_d{dim}", dim,
                                dynamic["separability"], dynamic["teacher_seed"],
                                dynamic["data_seed"], batch_size, metadata={"family": name})

  return TaskFamily(name, lambda key: int(common.choice(key, tuple(dims))), sample_dynamic,
                    make_task, {"architecture": "linear", "dataset": SYNTHETIC,
                                "dims": tuple(dims), "separability_range": (lo, hi),
                                "batch_size": batch_size})


for _ds in ("digits", "mnist1d", "fashion_mnist"):
  register_task(f"logistic_{common.dataset_tag(_ds)}", lambda ds=_ds: logistic_task(ds))
register_task("logistic_synthetic_d32_sep4", lambda: synthetic_logistic_task(32, 4.0))
register_family("logistic_synthetic_family", synthetic_logistic_family)
