"""Meta-training a learned rule on a problem family by truncated backprop (classic L2O).

The setting of math-structured L2O (Liu et al. 2023): a batch of instances is
optimized for ``horizon`` steps by the learned rule, split into truncations of
``truncation`` steps; after each truncation the meta-parameters take one Adam step on
the gradient of

    meta-loss = mean over the truncation's steps k and instances of F(x_k) / |F(x_0)|

backpropagated through the truncation's unroll (the inner state crosses truncation
boundaries with its gradient stopped). After ``horizon`` steps new instances are drawn.

This is not a trainer of its own: ``train`` runs ``metaopt.meta.MetaTrainer`` with the
``tbptt`` estimator on ``problem.as_l2o_family()``, whose tasks expose the split the
learned rule needs. The rule sees the gradient of the *smooth* part ``f`` (the
``train`` batch) and handles the ``l1 ||x||_1`` term itself (``math_l2o`` with
``l1_strength = problem.l1``); the meta-loss is ``F`` (the ``outer_valid`` batch),
scored at the iterate the optimizer exposes (``metaopt.inner.eval_params``: the
proximal output ``x`` of ``math_l2o``, where the gradient point is not sparse).
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import inner, lopt
from metaopt.lopt import base as lopt_base
from metaopt.lopt.base import LearnedOptimizer
from metaopt.meta import config as meta_config
from metaopt.meta.config import MetaTrainConfig
from metaopt.meta.trainer import MetaTrainer
from tasks import registry as task_registry
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


def _unroll(problem: Problem, tx, inst: Instance, y, state, num_steps: int):
  """``num_steps`` learned steps on one instance from ``(y, state)``; returns the final
  ``(y, state)`` and ``F`` of each iterate, shape ``(num_steps,)``."""

  def body(carry, _):
    y, s, _ = inner.apply_step(tx, lambda x: problem.smooth(x, problem.data, inst), *carry)
    return (y, s), problem.objective(inner.eval_params(s, y), inst)

  return jax.lax.scan(body, (y, state), None, length=num_steps)


def math_l2o_for(problem: Problem, num_probe: int = 64, **overrides) -> LearnedOptimizer:
  """A ``math_l2o`` optimizer matched to ``problem``: ``l1_strength = problem.l1`` and
  base step ``lr = 1 / median L`` over ``num_probe`` training instances."""
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
  tx = opt.transform(theta, num_steps=num_steps)

  def one(inst):
    x0 = jnp.zeros((problem.dim,), jnp.float32)
    _, fs = _unroll(problem, tx, inst, x0, tx.init(x0), num_steps)
    return jnp.concatenate([problem.objective(x0, inst)[None], fs])

  return jax.jit(jax.vmap(one, out_axes=1))(instances)


def meta_train_config(problem: Problem, opt: LearnedOptimizer, config: UnrollConfig,
                      run_dir: str) -> MetaTrainConfig:
  """The meta-training config ``train`` runs: TBPTT, all instances in lockstep."""
  return meta_config.from_dict({
      "family": problem.l2o_family_name, "lopt": opt.arch,
      "lopt_config": lopt_base.config_to_dict(opt.config),
      "seed": config.seed,
      "schedule": {"name": "constant", "truncation_length": config.truncation,
                   "horizon": config.horizon, "random_offsets": False},
      "estimator": {"name": "tbptt", "num_tasks": config.batch_size, "meta_loss": "valid"},
      "outer": {"optimizer": "adam", "lr": config.learning_rate, "grad_clip": "global_norm",
                "clip_value": config.clip_norm, "num_steps": config.meta_steps},
      "eval": {"every": 0},
      "run": {"name": f"l2o_{problem.name}", "run_dir": run_dir, "log_every": 1,
              "checkpoint_every": max(config.meta_steps // 4, 1), "wandb_mode": "disabled"}})


@dataclasses.dataclass
class UnrollResult:
  """Attributes: theta (host arrays), config, losses ((meta_steps,) meta-loss per
  step), wall_time (seconds of the run, resumed sessions included)."""
  theta: Any
  config: UnrollConfig
  losses: np.ndarray
  wall_time: float


def train(problem: Problem, opt: LearnedOptimizer, config: UnrollConfig = UnrollConfig(),
          run_dir: Optional[str] = None, progress: bool = False,
          callback: Optional[Callable[[int, Dict[str, float]], None]] = None) -> UnrollResult:
  """Meta-trains ``opt`` on ``problem`` by truncated backprop (module docstring).

  ``run_dir`` holds checkpoints and ``metrics.jsonl``: a killed run resumes there
  (default: a fresh temporary directory). ``callback(step, {"meta_loss": ...})`` is
  called for every outer step once the run is done (e.g. another metrics logger).
  """
  _check_l1(problem, opt)
  if not config.meta_steps:
    return UnrollResult(opt.init_meta_params(jax.random.PRNGKey(config.seed)), config,
                        np.zeros((0,)), 0.0)
  run_dir = run_dir or tempfile.mkdtemp(prefix="metaopt_l2o_")
  # A config names its family; an unregistered problem's is registered while it is built.
  name = problem.l2o_family_name
  added = name not in task_registry.FAMILIES
  if added:
    task_registry.FAMILIES.register(name, problem.as_l2o_family)
  try:
    meta_config_ = meta_train_config(problem, opt, config, run_dir)
  finally:
    if added:
      task_registry.FAMILIES.unregister(name)
  trainer = MetaTrainer(meta_config_, family=problem.as_l2o_family(), lopt=opt)
  result = trainer.run(progress=progress)
  rows = [r for r in result.rows if "meta_loss" in r]
  for row in rows if callback is not None else ():
    callback(row["step"], {"meta_loss": row["meta_loss"]})
  return UnrollResult(result.theta, config, np.asarray([r["meta_loss"] for r in rows]),
                      rows[-1]["elapsed_s"] if rows else 0.0)
