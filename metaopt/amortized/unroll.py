"""Truncated-backprop meta-training of a learned optimizer on a problem family.

The simple loop used for classic L2O (Liu et al. 2023, math-structured L2O): a batch
of instances is optimized for ``horizon`` steps by the learned rule, split into
truncations of ``truncation`` steps; after each truncation the meta-parameters take
one Adam step on the gradient of

    meta-loss = mean over the truncation's steps k and instances of F(x_k) / |F(x_0)|

backpropagated through the truncation's unroll (the inner state crosses truncation
boundaries with its gradient stopped). After ``horizon`` steps new instances are
drawn. The learned optimizer sees the gradient of the *smooth* part ``f`` and handles
the ``l1 ||x||_1`` term itself (``math_l2o`` with ``l1_strength = problem.l1``).

``F`` is scored at the optimizer's proximal output ``state.x`` when its state has one
(``math_l2o``: the extrapolated point where the gradient is taken is not sparse),
otherwise at the parameters.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import inner
from metaopt.lopt.base import LearnedOptimizer
from tasks.problems import Instance, Problem


@dataclasses.dataclass(frozen=True)
class UnrollConfig:
  """Attributes:
    horizon: inner steps per instance batch (paper: 100).
    truncation: steps per meta-gradient (paper: 20); must divide ``horizon``.
    meta_steps: number of meta-gradient steps (truncations).
    batch_size: instances optimized in parallel (vmapped).
    learning_rate: Adam learning rate for theta.
    clip_norm: global-norm clipping of the meta-gradient.
    seed: seeds theta's init and the instances.
  """
  horizon: int = 100
  truncation: int = 20
  meta_steps: int = 200
  batch_size: int = 16
  learning_rate: float = 1e-3
  clip_norm: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.truncation < 1 or self.horizon % self.truncation:
      raise ValueError(f"truncation ({self.truncation}) must be >= 1 and divide horizon "
                       f"({self.horizon}).")
    if self.meta_steps < 0 or self.batch_size < 1:
      raise ValueError(f"UnrollConfig needs meta_steps >= 0 and batch_size >= 1; got {self}.")


def _iterate(state, params):
  return state.x if hasattr(state, "x") else params


def _unroll(problem: Problem, tx, inst: Instance, y, state, num_steps: int):
  """``num_steps`` learned steps on one instance from ``(y, state)``; returns the final
  ``(y, state)`` and ``F`` of each iterate, shape ``(num_steps,)``."""

  def body(carry, _):
    y, s, _ = inner.apply_step(tx, lambda x: problem.smooth(x, problem.data, inst), *carry)
    return (y, s), problem.objective(_iterate(s, y), inst)

  return jax.lax.scan(body, (y, state), None, length=num_steps)


def math_l2o_for(problem: Problem, num_probe: int = 64, **overrides) -> LearnedOptimizer:
  """A ``math_l2o`` optimizer matched to ``problem``: ``l1_strength = problem.l1`` and
  base step ``lr = 1 / median L`` over ``num_probe`` training instances."""
  from metaopt import lopt  # pylint: disable=import-outside-toplevel
  probe = problem.sample_batch(jax.random.PRNGKey(12345), num_probe)
  lips = jax.vmap(lambda i: problem.lipschitz(problem.data, i))(probe)
  config = {"l1_strength": float(problem.l1), "lr": float(1.0 / np.median(np.asarray(lips)))}
  config.update(overrides)
  return lopt.build("math_l2o", config)


def _check_l1(problem: Problem, opt: LearnedOptimizer):
  l1 = getattr(opt.config, "l1_strength", None)
  if problem.l1 and l1 is not None and abs(l1 - problem.l1) > 1e-12:
    raise ValueError(f"The optimizer's l1_strength={l1} differs from the problem's "
                     f"l1={problem.l1}; build it with math_l2o_for(problem).")


def rollout(problem: Problem, opt: LearnedOptimizer, theta: Any, instances: Instance,
            num_steps: int) -> jax.Array:
  """``F(x_k)`` for ``k = 0..num_steps``, shape ``(num_steps + 1, batch)``."""
  _check_l1(problem, opt)
  tx = opt.transform(theta)

  def one(inst):
    x0 = jnp.zeros((problem.dim,), jnp.float32)
    _, fs = _unroll(problem, tx, inst, x0, tx.init(x0), num_steps)
    return jnp.concatenate([problem.objective(x0, inst)[None], fs])

  return jax.jit(jax.vmap(one, out_axes=1))(instances)


@dataclasses.dataclass
class UnrollResult:
  theta: Any
  config: UnrollConfig
  losses: np.ndarray
  wall_time: float


def train(problem: Problem, opt: LearnedOptimizer, config: UnrollConfig = UnrollConfig(),
          theta: Optional[Any] = None, callback=None, log_every: int = 20) -> UnrollResult:
  """Meta-trains ``opt`` on ``problem`` by truncated backprop (module docstring)."""
  _check_l1(problem, opt)
  key = jax.random.PRNGKey(config.seed)
  k_theta, k_data = jax.random.split(key)
  k_data = problem.split_key(k_data, "train")
  if theta is None:
    theta = opt.init_meta_params(k_theta)
  outer = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                      optax.adam(config.learning_rate))
  outer_state = outer.init(theta)

  def fresh(k):
    insts = problem.sample_batch(k, config.batch_size)
    x0 = jnp.zeros((config.batch_size, problem.dim), jnp.float32)
    scale = jnp.abs(jax.vmap(problem.objective)(x0, insts)) + 1e-8
    states = jax.vmap(opt.transform(theta).init)(x0)
    return insts, scale, x0, states

  def meta_loss(theta, insts, scale, ys, states):
    tx = opt.transform(theta)

    def one(inst, y, s):
      (y, s), fs = _unroll(problem, tx, inst, y, s, config.truncation)
      return jnp.mean(fs), (y, s)

    means, (ys, states) = jax.vmap(one)(insts, ys, states)
    return jnp.mean(means / scale), (ys, states)

  @jax.jit
  def meta_step(theta, outer_state, insts, scale, ys, states):
    (loss, (ys, states)), grads = jax.value_and_grad(meta_loss, has_aux=True)(
        theta, insts, scale, ys, states)
    updates, outer_state = outer.update(grads, outer_state, theta)
    return optax.apply_updates(theta, updates), outer_state, loss, ys, states

  fresh = jax.jit(fresh)
  per_episode = config.horizon // config.truncation
  losses = []
  t0 = time.perf_counter()
  for i in range(config.meta_steps):
    if i % per_episode == 0:
      insts, scale, ys, states = fresh(jax.random.fold_in(k_data, i // per_episode))
    theta, outer_state, loss, ys, states = meta_step(theta, outer_state, insts, scale, ys,
                                                     states)
    losses.append(loss)
    if callback is not None and (i + 1) % log_every == 0:
      callback(i + 1, {"meta_loss": float(loss)})
  losses = np.asarray(jax.device_get(losses), np.float64)
  return UnrollResult(theta, config, losses, time.perf_counter() - t0)
