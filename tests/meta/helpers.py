"""Small families and a tiny learned optimizer for meta-training tests."""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import base as lopt_base
from metaopt.lopt.base import LearnedOptimizer
from tasks import registry
from tasks.base import Task, TaskFamily

DIAG = (0.3, 1.0, 2.0, 3.5)


@dataclasses.dataclass(frozen=True)
class LrMomConfig:
  init_log_lr: float = -2.0
  init_logit_momentum: float = 0.0


class LrMomentum(LearnedOptimizer):
  """Heavy-ball SGD with meta-learned ``lr = exp(log_lr)`` and
  ``momentum = sigmoid(logit_momentum)`` (theta is a 2-leaf dict)."""

  arch = "test_lr_momentum"
  Config = LrMomConfig

  def init_meta_params(self, key):
    del key
    return {"log_lr": jnp.asarray(self.config.init_log_lr, float),
            "logit_momentum": jnp.asarray(self.config.init_logit_momentum, float)}

  def transform(self, theta, *, num_steps=None, param_info=None):
    del num_steps, param_info
    lr = jnp.exp(theta["log_lr"])
    beta = jax.nn.sigmoid(theta["logit_momentum"])

    def init(params):
      return jax.tree_util.tree_map(jnp.zeros_like, params)

    def update(grads, state, params=None, **extra):
      del params, extra
      state = jax.tree_util.tree_map(lambda m, g: beta * m + g, state, grads)
      return jax.tree_util.tree_map(lambda m: -lr * m, state), state

    return optax.GradientTransformationExtraArgs(init, update)


def quadratic_family(fixed: bool = True, diverge_scale: float = 0.0,
                     name: str = "test_quadratic") -> TaskFamily:
  """``0.5 * sum(scale * DIAG * x**2)`` from ``x0 = 1`` (no data, no batches).

  ``fixed``: every task is the same (scale 1) so ES averages over tasks estimate one
  gradient; otherwise ``scale`` is log-uniform in [0.5, 2]. ``diverge_scale`` > 0
  makes a fraction of tasks (scale = diverge_scale) diverge under any sane lr.
  """

  def sample_dynamic(key, static):
    del static
    if fixed:
      return jnp.ones(())
    k1, k2 = jax.random.split(key)
    scale = jnp.exp(jax.random.uniform(k1, (), minval=jnp.log(0.5), maxval=jnp.log(2.0)))
    if diverge_scale:
      scale = jnp.where(jax.random.uniform(k2) < 0.25, diverge_scale, scale)
    return scale

  def make_task(static, scale):
    del static
    diag = jnp.asarray(DIAG) * scale

    def init(key):
      del key
      return {"x": jnp.ones((len(DIAG),), float)}

    def loss(params, batch, key):
      del batch, key
      return 0.5 * jnp.sum(diag * params["x"]**2)

    return Task(name=name, init=init, loss=loss, data={}, batch=lambda d, k, s: {},
                abstract_batch={}, normalize_loss=lambda x: x)

  return TaskFamily(name, lambda key: None, sample_dynamic, make_task)


@contextlib.contextmanager
def registered_test_names():
  """Registers ``test_quadratic`` (non-fixed) and ``test_lr_momentum`` while active: a
  ``MetaTrainConfig`` checks that its family and lopt names exist."""
  new_family = "test_quadratic" not in registry.FAMILIES
  new_arch = LrMomentum.arch not in lopt_base.ARCHS
  if new_family:
    registry.FAMILIES.register("test_quadratic", lambda: quadratic_family(fixed=False))
  if new_arch:
    lopt_base.register(LrMomentum)
  try:
    yield
  finally:
    if new_family:
      registry.FAMILIES.unregister("test_quadratic")
    if new_arch:
      lopt_base.ARCHS.unregister(LrMomentum.arch)
