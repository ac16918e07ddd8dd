"""Learnable Adam (``adam``): Adam whose hyper-parameters are the meta-parameters.

``theta = {"log_lr", "logit_b1", "logit_b2", "log_eps"}`` (float32 scalars), i.e.
``lr = exp(log_lr)``, ``b1 = sigmoid(logit_b1)``, ``b2 = sigmoid(logit_b2)``,
``eps = exp(log_eps)``. The update is exactly ``optax.adam(lr, b1, b2, eps)``:

    mu = b1 mu + (1 - b1) g;   nu = b2 nu + (1 - b2) g^2
    update = -lr * (mu / (1 - b1^t)) / (sqrt(nu / (1 - b2^t)) + eps)

A meta-learning baseline (four meta-parameters, the outer loop tunes Adam) and a
correctness anchor for the meta-training machinery. Horizon-free; reads no params.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt.base import LearnedOptimizer, register


@dataclasses.dataclass(frozen=True)
class AdamConfig:
  """Initial hyper-parameters (``init_meta_params`` encodes them; the key is unused)."""
  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8


class AdamState(NamedTuple):
  """``count``: int32 steps so far; ``mu``/``nu``: first/second moments like params."""
  count: jax.Array
  mu: Any
  nu: Any


def theta_from_hparams(learning_rate: float, b1: float, b2: float, eps: float):
  """The meta-parameters that make this optimizer ``optax.adam(lr, b1, b2, eps)``."""
  for name, val, lo, hi in (("learning_rate", learning_rate, 0, None), ("b1", b1, 0, 1),
                            ("b2", b2, 0, 1), ("eps", eps, 0, None)):
    if not val > lo or (hi is not None and not val < hi):
      bound = f"in ({lo}, {hi})" if hi is not None else f"> {lo}"
      raise ValueError(f"Adam {name}={val} must be {bound}.")
  f = lambda x: jnp.asarray(x, jnp.float32)
  return {"log_lr": f(jnp.log(learning_rate)), "logit_b1": f(jax.scipy.special.logit(b1)),
          "logit_b2": f(jax.scipy.special.logit(b2)), "log_eps": f(jnp.log(eps))}


def hparams_from_theta(theta):
  """``(lr, b1, b2, eps)`` arrays decoded from ``theta``."""
  return (jnp.exp(theta["log_lr"]), jax.nn.sigmoid(theta["logit_b1"]),
          jax.nn.sigmoid(theta["logit_b2"]), jnp.exp(theta["log_eps"]))


def learnable_adam(theta) -> optax.GradientTransformationExtraArgs:
  """Adam with hyper-parameters decoded from (possibly traced) ``theta``."""
  lr, b1, b2, eps = hparams_from_theta(theta)

  def init_fn(params):
    zeros = lambda: jax.tree_util.tree_map(
        lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32)),
        params)
    return AdamState(jnp.zeros((), jnp.int32), zeros(), zeros())

  def update_fn(grads, state, params=None, **extra_args):
    del params, extra_args
    count = optax.safe_increment(state.count)
    mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, grads)
    t = count.astype(jnp.float32)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    updates = jax.tree_util.tree_map(
        lambda m, v, g: (-lr * (m / c1) / (jnp.sqrt(v / c2) + eps)).astype(jnp.result_type(g)),
        mu, nu, grads)
    return updates, AdamState(count, mu, nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@register
class LearnableAdam(LearnedOptimizer):
  """Adam with meta-learned (lr, b1, b2, eps). See the module docstring."""

  arch = "adam"
  Config = AdamConfig

  def init_meta_params(self, key):
    del key  # deterministic: starts at the configured hyper-parameters
    c = self.config
    return theta_from_hparams(c.learning_rate, c.b1, c.b2, c.eps)

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    del num_steps, param_info
    return learnable_adam(theta)

  def flops_per_param(self) -> int:
    """Arithmetic per parameter per step (2 EMAs, bias corrections, sqrt, divide)."""
    return 12
