"""Quadratics with a controlled condition number, optionally with gradient noise.

    loss(x) = 1/2 (x - x*)' A (x - x*) + noise' x,     A = Q diag(s) Q',

with eigenvalues ``s`` log-spaced between 1 and ``kappa`` (so ``cond(A) = kappa``
exactly), ``Q`` a Haar-random rotation and ``x* ~ N(0, I)``. ``noise ~ N(0,
noise_std^2 I)`` comes from the batch, so the stochastic gradient ``A (x - x*) +
noise`` is unbiased (``noise_std = 0`` gives the exact gradient). Params are
``{"x": (dim,)}``, initialised ``x0 ~ N(0, I)``; the expected initial loss is
``tr(A)``, which is the normalizer's reference (normalized loss ~1 at init).

Tasks of a family share the static dimension and differ in the dynamic
``log_cond``, ``rotation_seed`` and ``x_star``; the matrix is rebuilt from them
inside ``make_task`` (traceable, so a batch of quadratics vmaps).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp

from tasks import common
from tasks.base import SYNTHETIC, ParamInfo, Task, TaskFamily, log_normalizer
from tasks.registry import register_family, register_task


def random_rotation(key: jax.Array, dim: int) -> jax.Array:
  """A Haar-distributed orthogonal ``(dim, dim)`` matrix (QR with sign fix)."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim), jnp.float32))
  return q * jnp.sign(jnp.diag(r))


def eigenvalues(dim: int, log_cond: Any) -> jax.Array:
  """``dim`` eigenvalues log-spaced from 1 to ``exp(log_cond)`` (may be traced)."""
  return jnp.exp(jnp.linspace(0.0, 1.0, dim) * log_cond)


@functools.partial(jax.jit, static_argnums=0)  # One compile per dim, not op by op.
def quadratic_matrix(dim: int, log_cond: Any, rotation_key: jax.Array) -> jax.Array:
  """Symmetric positive definite ``A = Q diag(s) Q'`` with ``cond(A) = exp(log_cond)``."""
  q = random_rotation(rotation_key, dim)
  a = (q * eigenvalues(dim, log_cond)) @ q.T
  return 0.5 * (a + a.T)


def _check(dim: int, cond: float, noise_std: float) -> None:
  if dim < 1:
    raise ValueError(f"Quadratic dimension must be >= 1, got {dim}.")
  if not cond >= 1.0:
    raise ValueError(f"Condition number must be >= 1, got {cond}.")
  if noise_std < 0:
    raise ValueError(f"noise_std must be >= 0, got {noise_std}.")


def build_quadratic_task(name: str, dim: int, log_cond: Any, rotation_seed: Any, x_star: Any,
                         noise_std: float = 0.0,
                         metadata: Optional[Dict[str, Any]] = None) -> Task:
  """A quadratic task from (possibly traced) ``log_cond``, ``rotation_seed``, ``x_star``."""
  a = quadratic_matrix(dim, log_cond, common.seed_key(jax.random.PRNGKey(0), rotation_seed))
  x_star = jnp.asarray(x_star, jnp.float32)
  # The normalizer's reference is the expected initial loss tr(A) = sum of eigenvalues;
  # dividing first keeps a traced reference usable with the Python-float normalizer.
  reference = jnp.sum(eigenvalues(dim, log_cond))
  unit_normalizer = log_normalizer(1.0)

  def init(key):
    return {"x": jax.random.normal(key, (dim,), jnp.float32)}

  def loss(params, batch, key):
    del key
    d = params["x"] - x_star
    return 0.5 * d @ (a @ d) + batch["noise"] @ params["x"]

  def batch(data, key, split):
    del data
    key = jax.random.fold_in(key, common.SPLIT_IDS[split])
    return {"noise": noise_std * jax.random.normal(key, (dim,), jnp.float32)}

  meta = {"architecture": "quadratic", "dataset": SYNTHETIC, "dim": dim, "noise_std": noise_std,
          "num_params": dim}
  meta.update(metadata or {})
  return Task(
      name=name, init=init, loss=loss, data={}, batch=batch,
      abstract_batch={"noise": jax.ShapeDtypeStruct((dim,), jnp.float32)},
      normalize_loss=lambda value: unit_normalizer(value / reference),
      param_info=lambda params: {"x": ParamInfo("scalar", 1, dim)},
      metadata=meta,
      # Evaluation is the exact objective (no gradient noise): one noise-free batch.
      eval_batches=lambda data, split: {"noise": jnp.zeros((1, dim), jnp.float32)})


def quadratic_name(dim: int, cond: float, noise_std: float = 0.0) -> str:
  """``quadratic_d<dim>_cond<cond>[_noise<std>]``."""
  noise_tag = f"_noise{noise_std:g}" if noise_std else ""
  return f"quadratic_d{dim}_cond{cond:g}{noise_tag}"


def quadratic_task(dim: int = 10, cond: float = 10.0, noise_std: float = 0.0, seed: int = 0,
                   name: Optional[str] = None) -> Task:
  """A fixed quadratic: ``cond(A) = cond``; rotation and ``x*`` drawn from ``seed``."""
  _check(dim, cond, noise_std)
  k_rot, k_star = jax.random.split(jax.random.PRNGKey(seed))
  rotation_seed = jax.random.bits(k_rot, (), jnp.uint32)
  x_star = jax.random.normal(k_star, (dim,), jnp.float32)
  name = name or quadratic_name(dim, cond, noise_std)
  return build_quadratic_task(name, dim, math.log(cond), rotation_seed, x_star, noise_std,
                              metadata={"cond": cond, "seed": seed})


def quadratic_family(dims: Sequence[int] = (10, 32, 100), max_cond: float = 1e4,
                     noise_std: float = 0.0, name: str = "quadratic_family") -> TaskFamily:
  """Quadratics with ``dim`` from ``dims`` (static) and, per task (dynamic),
  ``log_cond ~ U[0, log(max_cond)]``, a rotation seed and ``x* ~ N(0, I)``."""
  for d in dims:
    _check(d, max_cond, noise_std)

  def sample_static(key):
    return int(common.choice(key, tuple(dims)))

  def sample_dynamic(key, dim):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"log_cond": jax.random.uniform(k1, (), jnp.float32, 0.0, math.log(max_cond)),
            "rotation_seed": common.random_seed(k2),
            "x_star": jax.random.normal(k3, (dim,), jnp.float32)}

  def make_task(dim, dynamic):
    return build_quadratic_task(f"{name}/quadratic_d{dim}", dim, dynamic["log_cond"],
                                dynamic["rotation_seed"], dynamic["x_star"], noise_std,
                                metadata={"family": name})

  return TaskFamily(name, sample_static, sample_dynamic, make_task,
                    {"architecture": "quadratic", "dataset": SYNTHETIC, "dims": tuple(dims),
                     "max_cond": max_cond, "noise_std": noise_std})


for _dim, _cond, _noise in [(10, 10.0, 0.0), (10, 1000.0, 0.0), (100, 1000.0, 0.0),
                            (100, 100.0, 1.0)]:
  register_task(quadratic_name(_dim, _cond, _noise),
                lambda d=_dim, c=_cond, n=_noise: quadratic_task(d, c, n))

register_family("quadratic_family", lambda: quadratic_family())
register_family("quadratic_noisy_family", lambda: quadratic_family(noise_std=1.0,
                                                                   name="quadratic_noisy_family"))
# Leaderboard v3's ill-conditioned quadratic (condition number 1e4).
register_task(quadratic_name(100, 1e4), lambda: quadratic_task(100, 1e4, seed=3))
