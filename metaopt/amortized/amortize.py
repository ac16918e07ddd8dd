"""Fully and semi-amortized solvers (Amos 2022, "Tutorial on amortized optimization").

A model ``y_hat(c)`` (a haiku MLP) maps an instance's context ``c`` (e.g. a LASSO
observation ``y``) to a solution ``x``. Training losses over instances ``c``:

* ``regression``: ``E ||x*(c) - x_hat(c)||^2`` against reference solutions computed
  once for a fixed training set of ``num_train`` instances;
* ``objective``: ``E F(x_hat(c); c)``, the problem's own objective, on fresh
  instances every step (needs no solutions).

Semi-amortized (``finetune_steps = T > 0``): the prediction warm-starts ``T`` steps
of an iterative solver (ISTA / FISTA / the problem's native step such as Sinkhorn).
The steps are unrolled and differentiated through during training, so the model
learns a good *starting point* for the solver; the loss is applied to the last
iterate (``objective``) or to it against ``x*`` (``regression``).

The context is standardized with statistics of training instances (stored in the
result), so one architecture serves problems whose contexts differ in scale.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.amortized import solvers
from tasks.problems import Instance, Problem

LOSSES = ("regression", "objective")


@dataclasses.dataclass(frozen=True)
class AmortizedConfig:
  """Attributes:
    loss: ``"regression"`` or ``"objective"``.
    hidden: MLP hidden widths.
    finetune_steps: solver steps unrolled from the prediction (0: fully amortized).
    solver: fine-tuning solver, a key of ``solvers.SOLVERS``.
    steps: Adam steps.
    batch_size: instances per step.
    learning_rate: peak Adam learning rate (cosine decay to 1%).
    num_train: training-set size for ``regression`` (solved once up front).
    reference_iters: FISTA iterations for reference solutions (when the problem has
      no exact solver).
    seed: seeds the model init and the training instances.
  """
  loss: str = "objective"
  hidden: Tuple[int, ...] = (256, 256)
  finetune_steps: int = 0
  solver: str = "native"
  steps: int = 2000
  batch_size: int = 64
  learning_rate: float = 1e-3
  num_train: int = 2048
  reference_iters: int = 2000
  seed: int = 0

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f"Unknown amortization loss {self.loss!r}; known: {LOSSES}.")
    if self.solver not in solvers.SOLVERS:
      raise ValueError(f"Unknown fine-tuning solver {self.solver!r}; known: "
                       f"{sorted(solvers.SOLVERS)}.")
    if self.finetune_steps < 0 or self.steps < 0 or self.batch_size < 1:
      raise ValueError(f"AmortizedConfig needs finetune_steps >= 0, steps >= 0, "
                       f"batch_size >= 1; got {self}.")


def model(dim: int, hidden: Tuple[int, ...]) -> hk.Transformed:
  def forward(context):
    return hk.nets.MLP(tuple(hidden) + (dim,), activation=jax.nn.gelu)(context)
  return hk.without_apply_rng(hk.transform(forward))


@dataclasses.dataclass
class AmortizedResult:
  """A trained amortized model.

  Attributes:
    params: haiku parameters.
    stats: ``{"mean", "std"}`` context standardization.
    config: the config.
    losses: per-step training loss.
    wall_time: training seconds (including solving the regression set).
  """
  params: Any
  stats: Dict[str, jax.Array]
  config: AmortizedConfig
  losses: np.ndarray
  wall_time: float


def predict(problem: Problem, result: AmortizedResult, instances: Instance) -> jax.Array:
  """Fully amortized predictions ``(batch, dim)`` for a batch of instances."""
  net = model(problem.dim, result.config.hidden)
  c = (instances["context"] - result.stats["mean"]) / result.stats["std"]
  return net.apply(result.params, c)


def finetune(problem: Problem, solver: str, x0: jax.Array, instances: Instance,
             num_iters: int) -> jax.Array:
  """``num_iters`` solver steps from ``x0`` (batch, dim): ``(num_iters + 1, batch, dim)``."""
  run = solvers.SOLVERS[solver]
  xs = jax.vmap(lambda i, x: run(problem, i, num_iters, x))(instances, x0)
  return jnp.swapaxes(xs, 0, 1)


_finetune_jit = jax.jit(finetune, static_argnums=(0, 1, 4))


def solve_batch(problem: Problem, instances: Instance, num_iters: int = 2000) -> jax.Array:
  """Reference solutions ``(batch, dim)`` (jitted, vmapped over the batch)."""
  return jax.jit(jax.vmap(lambda i: solvers.reference_solution(problem, i, num_iters)))(
      instances)


def train(problem: Problem, config: AmortizedConfig = AmortizedConfig(),
          callback=None, log_every: int = 100) -> AmortizedResult:
  """Trains an amortized (or semi-amortized) solver for ``problem``."""
  t0 = time.perf_counter()
  key = jax.random.PRNGKey(config.seed)
  k_init, k_data = jax.random.split(key)
  k_data = problem.split_key(k_data, "train")
  net = model(problem.dim, config.hidden)

  stat_insts = problem.sample_batch(jax.random.fold_in(k_data, 10**6), 512)
  ctx = stat_insts["context"]
  stats = {"mean": jnp.mean(ctx, 0), "std": jnp.std(ctx, 0) + 1e-6}
  params = net.init(k_init, ctx[:1])

  train_set = None
  if config.loss == "regression":
    insts = problem.sample_batch(k_data, config.num_train)
    train_set = (insts, solve_batch(problem, insts, config.reference_iters))

  sched = optax.cosine_decay_schedule(config.learning_rate, max(config.steps, 1), 0.01)
  opt = optax.adam(sched)
  opt_state = opt.init(params)

  def loss_fn(params, insts, targets):
    c = (insts["context"] - stats["mean"]) / stats["std"]
    x = net.apply(params, c)
    if config.finetune_steps:
      x = finetune(problem, config.solver, x, insts, config.finetune_steps)[-1]
    if config.loss == "regression":
      return jnp.mean(jnp.sum((x - targets) ** 2, -1))
    return jnp.mean(jax.vmap(problem.objective)(x, insts))

  @jax.jit
  def step(params, opt_state, k, train_set):
    if train_set is None:
      insts, targets = problem.sample_batch(k, config.batch_size), None
    else:
      idx = jax.random.randint(k, (config.batch_size,), 0, config.num_train)
      insts, targets = jax.tree_util.tree_map(lambda a: a[idx], train_set)
    loss, grads = jax.value_and_grad(loss_fn)(params, insts, targets)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  k_steps = jax.random.fold_in(k_data, 1)
  for i in range(config.steps):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(k_steps, i),
                                   train_set)
    losses.append(loss)
    if callback is not None and (i + 1) % log_every == 0:
      callback(i + 1, {"loss": float(loss)})
  losses = np.asarray(jax.device_get(losses), np.float64)
  return AmortizedResult(params, stats, config, losses, time.perf_counter() - t0)


def evaluate(problem: Problem, x0: Optional[jax.Array], instances: Instance,
             x_star: jax.Array, num_iters: int, solver: str = "native") -> Dict[str, np.ndarray]:
  """Curves on held-out instances for ``k = 0..num_iters`` solver steps from ``x0``.

  ``x0`` (batch, dim) is a model's prediction (``predict``) or ``None`` for the zero
  start of the plain iterative baseline. Returns ``{"gap": mean F(x_k) - F*,
  "rel_gap": mean (F(x_k) - F*) / (F(0) - F*), "dist_db": 10 log10(E||x_k - x*||^2 /
  E||x*||^2)}``, each of shape ``(num_iters + 1,)``.
  """
  if x0 is None:
    x0 = jnp.zeros((x_star.shape[0], problem.dim), jnp.float32)
  xs = _finetune_jit(problem, solver, x0, instances, num_iters)
  obj = jax.vmap(problem.objective)
  f_star = obj(x_star, instances)
  f_zero = obj(jnp.zeros_like(x_star), instances)
  f = jax.vmap(lambda x: obj(x, instances))(xs)
  return {"gap": np.asarray(jnp.mean(f - f_star, -1)),
          "rel_gap": np.asarray(jnp.mean((f - f_star) / (f_zero - f_star), -1)),
          "dist_db": np.asarray(solvers.nmse_db(xs, x_star))}
