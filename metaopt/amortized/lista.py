"""Unrolled sparse coding: LISTA, LISTA-CP and ALISTA.

For ``y = A x + w`` with a fixed dictionary ``A`` (``m x n``), a ``K``-layer network
maps ``y`` to estimates ``x_1 .. x_K`` (``x_0 = 0``), each layer a learned ISTA step
with soft threshold ``eta(v, t) = sign(v) max(|v| - t, 0)``:

* ``lista`` (Gregor & LeCun 2010, untied): ``x_{k+1} = eta(W1_k y + W2_k x_k, t_k)``,
  ``W1_k`` (n x m), ``W2_k`` (n x n), initialized at ISTA: ``A'/L``, ``I - A'A/L``.
* ``lista_cp`` (Chen et al. 2018, coupled weights): ``x_{k+1} = eta(x_k + W_k'(y - A x_k),
  t_k)`` with ``W_k`` (m x n), initialized at ``A/L``.
* ``alista`` (Liu et al. 2019): ``x_{k+1} = eta(x_k - g_k W'(A x_k - y), t_k)`` with the
  *analytic* weight ``W`` computed once from ``A`` (``alista_weight``) and only the
  ``2K`` scalars ``g_k`` (step) and ``t_k`` (threshold) learned.

Training is supervised on the ground-truth code (the standard LISTA objective):
the loss averages ``||x_k - x||^2`` over layers ``k = 1..K`` (all layers, so every
prefix of the network is itself a good solver and NMSE per layer is meaningful),
on fresh instances each step; evaluation reports NMSE (dB) per layer on held-out
instances from a disjoint key stream.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.amortized.solvers import nmse_db, soft_threshold
from tasks.problems import Problem

VARIANTS = ("lista", "lista_cp", "alista")
DEFAULT_LR = {"lista": 3e-3, "lista_cp": 3e-3, "alista": 1e-2}


def alista_weight(a: jax.Array) -> jax.Array:
  """ALISTA's analytic weight: ``W = argmin ||W'A||_F^2  s.t.  W_i' A_i = 1 for all i``.

  This is the Frobenius-norm convex problem of ALISTA (Liu et al. 2019, eq. 18-19),
  solved in *closed form*: it separates over columns into ``min_w w'Gw`` s.t.
  ``w'a_i = 1`` with ``G = A A'``, whose solution is ``w_i = G^{-1} a_i /
  (a_i' G^{-1} a_i)`` (``G`` is invertible when ``A`` has full row rank, ``m <= n``).
  Returns ``W`` of shape ``(m, n)`` like ``A``.
  """
  a = jnp.asarray(a, jnp.float32)
  m, n = a.shape
  if m > n:
    raise ValueError(f"alista_weight needs a wide dictionary (m <= n), got {a.shape}.")
  ginv_a = jnp.linalg.solve(a @ a.T, a)
  return ginv_a / jnp.sum(a * ginv_a, axis=0, keepdims=True)


@dataclasses.dataclass(frozen=True)
class LISTAConfig:
  """Architecture and training settings.

  Attributes:
    variant: one of ``VARIANTS``.
    num_layers: ``K``.
    steps: Adam steps (fresh batch of instances each step).
    batch_size: instances per step.
    learning_rate: peak Adam learning rate (cosine decay to 1% over ``steps``);
      ``None`` picks ``DEFAULT_LR[variant]`` (ALISTA learns only 2K scalars and takes
      a larger rate).
    loss_layers: ``"all"`` averages the error of every layer, ``"last"`` uses the
      output layer only.
    seed: seeds training instances.
  """
  variant: str = "lista"
  num_layers: int = 16
  steps: int = 2000
  batch_size: int = 64
  learning_rate: Optional[float] = None
  loss_layers: str = "all"
  seed: int = 0

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"Unknown LISTA variant {self.variant!r}; known: {VARIANTS}.")
    if self.loss_layers not in ("all", "last"):
      raise ValueError(f"loss_layers must be 'all' or 'last', got {self.loss_layers!r}.")
    if self.num_layers < 1 or self.steps < 0 or self.batch_size < 1:
      raise ValueError(f"LISTAConfig needs num_layers >= 1, steps >= 0, batch_size >= 1; "
                       f"got {self}.")


def _dictionary(problem: Problem) -> jax.Array:
  if "A" not in (problem.data or {}):
    raise ValueError(f"LISTA needs a problem with a fixed dictionary data['A'] (e.g. "
                     f"tasks.sparse.lasso); {problem.name!r} has none.")
  return problem.data["A"]


def init_params(problem: Problem, variant: str, num_layers: int) -> Dict[str, jax.Array]:
  """Parameters initialized so the network equals ISTA with ``lam = problem.l1``."""
  a = _dictionary(problem)
  m, n = a.shape
  lip = float(problem.data.get("L", np.linalg.norm(np.asarray(a), 2) ** 2))
  k = num_layers
  theta = jnp.full((k,), problem.l1 / lip, jnp.float32)
  if variant == "lista":
    return {"W1": jnp.tile(a.T[None] / lip, (k, 1, 1)),
            "W2": jnp.tile((jnp.eye(n) - a.T @ a / lip)[None], (k, 1, 1)), "theta": theta}
  if variant == "lista_cp":
    return {"W": jnp.tile(a[None] / lip, (k, 1, 1)), "theta": theta}
  if variant == "alista":
    # ALISTA's W has W_i'A_i = 1, so a step of 1/L in A' units is about 1/L here too.
    return {"gamma": jnp.full((k,), 1.0 / lip, jnp.float32), "theta": theta}
  raise ValueError(f"Unknown LISTA variant {variant!r}; known: {VARIANTS}.")


def apply(params: Dict[str, jax.Array], variant: str, a: jax.Array, y: jax.Array,
          w_alista: Optional[jax.Array] = None) -> jax.Array:
  """Runs the network on observations ``y`` (``(..., m)``).

  Returns ``(K + 1, ..., n)``: ``x_0 = 0`` then the output of every layer.
  ``w_alista`` (from ``alista_weight(a)``) is required for ``alista``.
  """
  x0 = jnp.zeros(y.shape[:-1] + (a.shape[1],), y.dtype)
  if variant == "lista":
    def layer(x, p):
      x = soft_threshold(y @ p["W1"].T + x @ p["W2"].T, p["theta"])
      return x, x
  elif variant == "lista_cp":
    def layer(x, p):
      x = soft_threshold(x + (y - x @ a.T) @ p["W"], p["theta"])
      return x, x
  elif variant == "alista":
    if w_alista is None:
      raise ValueError("variant 'alista' needs w_alista=alista_weight(A).")

    def layer(x, p):
      x = soft_threshold(x - p["gamma"] * ((x @ a.T - y) @ w_alista), p["theta"])
      return x, x
  else:
    raise ValueError(f"Unknown LISTA variant {variant!r}; known: {VARIANTS}.")
  _, xs = jax.lax.scan(layer, x0, params)
  return jnp.concatenate([x0[None], xs])


@dataclasses.dataclass
class LISTAResult:
  """A trained network: ``params``, its config, the loss curve and train wall time."""
  params: Dict[str, Any]
  config: LISTAConfig
  losses: np.ndarray
  wall_time: float
  w_alista: Optional[jax.Array] = None

  def predict(self, problem: Problem, y: jax.Array) -> jax.Array:
    """Per-layer estimates ``(K + 1, batch, n)`` for observations ``y`` (batch, m)."""
    return apply(self.params, self.config.variant, _dictionary(problem), y, self.w_alista)


def train(problem: Problem, config: LISTAConfig = LISTAConfig(),
          callback=None, log_every: int = 100) -> LISTAResult:
  """Trains a LISTA-type network on ``problem``'s ground-truth codes.

  ``callback(step, {"loss": ...})`` is called every ``log_every`` steps.
  """
  if problem.truth is None:
    raise ValueError(f"LISTA training needs ground-truth codes; problem {problem.name!r} "
                     f"has no `truth` key (use a tasks.sparse.lasso problem).")
  a = _dictionary(problem)
  w_alista = alista_weight(a) if config.variant == "alista" else None
  params = init_params(problem, config.variant, config.num_layers)
  lr = config.learning_rate or DEFAULT_LR[config.variant]
  sched = optax.cosine_decay_schedule(lr, max(config.steps, 1), 0.01)
  opt = optax.adam(sched)
  opt_state = opt.init(params)
  key = problem.split_key(jax.random.PRNGKey(config.seed), "train")

  def loss_fn(params, inst):
    xs = apply(params, config.variant, a, inst["y"], w_alista)[1:]
    if config.loss_layers == "last":
      xs = xs[-1:]
    err = jnp.sum((xs - inst[problem.truth]) ** 2, axis=-1)
    return jnp.mean(err) / jnp.mean(jnp.sum(inst[problem.truth] ** 2, axis=-1))

  @jax.jit
  def step(params, opt_state, k):
    inst = problem.sample_batch(k, config.batch_size)
    loss, grads = jax.value_and_grad(loss_fn)(params, inst)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  t0 = time.perf_counter()
  for i in range(config.steps):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
    losses.append(loss)
    if callback is not None and (i + 1) % log_every == 0:
      callback(i + 1, {"loss": float(loss)})
  losses = np.asarray(jax.device_get(losses), np.float64)
  return LISTAResult(params, config, losses, time.perf_counter() - t0, w_alista)


def evaluate(problem: Problem, result: Optional[LISTAResult], instances) -> np.ndarray:
  """NMSE (dB) against the ground truth per layer ``k = 0..K`` on ``instances``."""
  xs = result.predict(problem, instances["y"])
  return np.asarray(nmse_db(xs, instances[problem.truth]))
