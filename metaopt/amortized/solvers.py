"""Iterative baselines and metrics for composite problems ``F = f + l1 ||x||_1``.

All solvers act on one instance (``vmap`` them over a batch) and return the whole
trajectory ``(num_iters + 1, dim)`` with ``x_0`` first, so curves per iteration
come for free. Step size is ``1 / L`` with ``L = problem.lipschitz``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from tasks.problems import Instance, Problem


def soft_threshold(v: jax.Array, t) -> jax.Array:
  """``prox_{t ||.||_1}(v) = sign(v) max(|v| - t, 0)`` (elementwise, ``t >= 0``)."""
  return jnp.sign(v) * jnp.maximum(jnp.abs(v) - t, 0.0)


def prox_grad_step(problem: Problem, x: jax.Array, inst: Instance, step=None) -> jax.Array:
  """One ISTA step ``prox_{step l1}(x - step grad f(x))``; ``step`` defaults to 1/L."""
  if step is None:
    step = 1.0 / problem.lipschitz(problem.data, inst)
  grad = jax.grad(problem.smooth)(x, problem.data, inst)
  return soft_threshold(x - step * grad, step * problem.l1)


def _x0(problem, x0):
  return jnp.zeros((problem.dim,), jnp.float32) if x0 is None else x0


def ista(problem: Problem, inst: Instance, num_iters: int,
         x0: Optional[jax.Array] = None) -> jax.Array:
  """ISTA / proximal gradient descent: ``(num_iters + 1, dim)`` iterates."""
  step = 1.0 / problem.lipschitz(problem.data, inst)

  def body(x, _):
    x = prox_grad_step(problem, x, inst, step)
    return x, x

  x0 = _x0(problem, x0)
  _, xs = jax.lax.scan(body, x0, None, length=num_iters)
  return jnp.concatenate([x0[None], xs])


def fista(problem: Problem, inst: Instance, num_iters: int,
          x0: Optional[jax.Array] = None) -> jax.Array:
  """FISTA (Beck & Teboulle 2009) with ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``."""
  step = 1.0 / problem.lipschitz(problem.data, inst)

  def body(carry, _):
    x, z, t = carry
    x_new = prox_grad_step(problem, z, inst, step)
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    z = x_new + ((t - 1.0) / t_new) * (x_new - x)
    return (x_new, z, t_new), x_new

  x0 = _x0(problem, x0)
  _, xs = jax.lax.scan(body, (x0, x0, jnp.float32(1.0)), None, length=num_iters)
  return jnp.concatenate([x0[None], xs])


def native(problem: Problem, inst: Instance, num_iters: int,
           x0: Optional[jax.Array] = None) -> jax.Array:
  """The problem's own iterative solver (``problem.step``, e.g. Sinkhorn), else ISTA."""
  if problem.step is None:
    return ista(problem, inst, num_iters, x0)

  def body(x, _):
    x = problem.step(x, problem.data, inst)
    return x, x

  x0 = _x0(problem, x0)
  _, xs = jax.lax.scan(body, x0, None, length=num_iters)
  return jnp.concatenate([x0[None], xs])


SOLVERS = {"ista": ista, "fista": fista, "native": native}


def reference_solution(problem: Problem, inst: Instance, num_iters: int = 3000) -> jax.Array:
  """``x*``: the problem's exact/reference solver, else ``num_iters`` FISTA steps."""
  if problem.reference is not None:
    return problem.reference(problem.data, inst)
  return fista(problem, inst, num_iters)[-1]


def prox_grad_residual(problem: Problem, x: jax.Array, inst: Instance) -> jax.Array:
  """``L ||x - prox(x - grad f(x)/L)||``: the prox-gradient mapping norm, zero exactly
  at minimizers of ``F`` (the composite analogue of ``||grad F||``)."""
  lip = problem.lipschitz(problem.data, inst)
  return lip * jnp.linalg.norm(x - prox_grad_step(problem, x, inst, 1.0 / lip))


def nmse_db(x_hat: jax.Array, x_true: jax.Array) -> jax.Array:
  """NMSE in dB over a batch (leading axis): ``10 log10(E||x_hat - x||^2 / E||x||^2)``.

  ``x_hat`` may carry extra leading axes (e.g. ``(K+1, B, n)`` per layer); the last
  two axes are ``(batch, dim)`` and the result has the remaining leading shape.
  """
  err = jnp.sum((x_hat - x_true) ** 2, axis=(-2, -1))
  return 10.0 * jnp.log10(err / jnp.sum(x_true ** 2))
