"""MLP autoencoders on image datasets.

Model: ``x (B, D) in [0, 1] -> [dense -> relu] * encoder -> code -> [dense -> relu] *
decoder -> dense -> logits (B, D)``, the decoder widths the encoder's reversed.
Loss: per-pixel sigmoid binary cross-entropy of the logits against the input
pixels, averaged over pixels and examples (so 0.69 at logits 0). No ``error_rate``
(not a classifier).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from tasks import common
from tasks.base import Task, make_normalizer, num_params
from tasks.mlp import init_mlp, mlp_forward, mlp_param_info
from tasks.registry import register_task


def autoencoder_task(dataset: str = "mnist_5k", hidden: Sequence[int] = (128, 32),
                     batch_size: int = 64, name: str = None, data=None) -> Task:
  """An MLP autoencoder with encoder widths ``hidden`` (the last one is the code)."""
  hidden = tuple(int(h) for h in hidden)
  if not hidden or min(hidden) < 1 or batch_size < 1:
    raise ValueError(f"autoencoder_task: hidden={hidden} and batch_size={batch_size} must "
                     "be positive.")
  if data is None:
    data = common.load_dataset(dataset)
  dim = common.feature_dim(data)
  sizes = (dim,) + hidden + hidden[-2::-1] + (dim,)

  def init(key):
    return init_mlp(key, sizes)

  def loss(params, batch, key):
    del key
    logits = mlp_forward(params, batch["x"])
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["x"]))

  def batch(data, key, split):
    return common.flat_classification_batch(data, key, split, batch_size)

  n = num_params(jax.eval_shape(init, jax.random.PRNGKey(0)))
  return Task(
      name=name or f"autoencoder_{common.dataset_tag(dataset)}_{'-'.join(map(str, hidden))}",
      init=init, loss=loss, data=data, batch=batch,
      abstract_batch=common.abstract_flat_classification_batch(data, batch_size),
      normalize_loss=make_normalizer(math.log(2.0)), param_info=mlp_param_info,
      eval_batches=common.flat_classification_eval,
      metadata={"architecture": "autoencoder", "dataset": dataset, "hidden": hidden,
                "batch_size": batch_size, "num_params": n})


register_task("autoencoder_mnist5k_128-32", lambda: autoencoder_task("mnist_5k", (128, 32)))
