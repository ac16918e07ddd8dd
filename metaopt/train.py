"""Training a task with any optax transformation, with progress and logging.

``train`` is the host-side driver of ``metaopt.inner``: it runs one evaluation period
per compiled call (``inner.run_periods`` over one period), so the progress bar, the
callback and the divergence stop run between periods. ``run`` adds a run directory
(config, ``metrics.jsonl``, curve plot, wandb) for ``metaopt train``.

Schedule-free optimizers (``optax.contrib.schedule_free*``) are evaluated, and their
final parameters returned, at the averaged iterate (``inner.eval_params``).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

import tasks
from metaopt import inner, optimizers
from metaopt.runlog import MetricsLogger, plot_curves, read_metrics
from tasks.base import Task

# Compiled programs keyed by the functions they were traced from (the task's ``loss``
# and ``batch``, the optimizer) and the argument shapes, so training the same task
# and optimizer objects again (more seeds, more runs) skips XLA compilation.
_COMPILED: "collections.OrderedDict" = collections.OrderedDict()
_COMPILED_MAX = 64


def _compiled(key, fn, *args):
  """``fn`` compiled ahead of time for ``args``, cached under ``key`` and the args'
  abstract signature (tree structure, shapes, dtypes)."""
  leaves, treedef = jax.tree_util.tree_flatten(args)
  full_key = (key, treedef, tuple(jax.typeof(x) for x in leaves))
  try:
    hash(full_key)
  except TypeError:  # An optimizer built from unhashable callables: no caching.
    return jax.jit(fn).lower(*args).compile()
  if full_key in _COMPILED:
    _COMPILED.move_to_end(full_key)
    return _COMPILED[full_key]
  exe = jax.jit(fn).lower(*args).compile()
  _COMPILED[full_key] = exe
  if len(_COMPILED) > _COMPILED_MAX:
    _COMPILED.popitem(last=False)
  return exe


def train(task: Task, opt: optax.GradientTransformation, steps: int, seed: int = 0,
          eval_every: int = 50, eval_batches: int = 4, progress: bool = False,
          callback: Optional[Callable[[int, Dict], None]] = None,
          stop_on_divergence: bool = True,
          blowup_factor: Optional[float] = inner.DEFAULT_BLOWUP_FACTOR) -> inner.RunResult:
  """Trains ``task`` with ``opt`` for ``steps`` steps (seed rule: ``metaopt.inner``).

  Args:
    task: the task.
    opt: any optax transformation (it receives the loss as ``value`` and the
      objective as ``obj_fn`` when it takes extra arguments).
    steps: number of optimizer steps.
    seed: seeds init, train batches and evaluation batches; same seed, same numbers.
    eval_every: validation loss every this many steps (and at the last step).
    eval_batches: ``inner_valid`` batches averaged per evaluation.
    progress: show a tqdm progress bar.
    callback: ``callback(step, metrics)`` after each evaluation (e.g. a logger);
      ``metrics`` has ``train_loss`` (mean since the last evaluation) and ``valid_loss``.
    stop_on_divergence: stop after the period where the run diverged; the rest of
      the run is NaN (``inner.mark_divergence``).
    blowup_factor: a finite training loss above this many times the initial loss
      (``inner.divergence_step``) is divergence too; None: only non-finite losses
      (the leaderboard's rule).

  Returns:
    ``inner.RunResult`` with the final (evaluation) parameters in ``params``;
    ``wall_time`` counts the training steps only (compilation and evaluation
    excluded).
  """
  ends = inner.eval_schedule(steps, eval_every)
  k_init, step_keys = inner.seed_keys(seed, steps)
  params = task.init(k_init)
  if not jax.tree_util.tree_leaves(params):
    raise ValueError(f"task {task.name!r}: init returned parameters without any array "
                     f"({params!r}); a task must have something to train.")
  carry = inner.initial_carry(task, opt, params, k_init)

  def period(carry, data, keys):
    # A stateful task's carry holds its model state (BatchNorm statistics) too.
    return inner.run_periods(task, opt, carry[0], carry[1], data, keys[None], eval_batches,
                             model_state=carry[2] if task.stateful else None)

  fn_key = ("period", task.loss, task.batch, type(opt), opt, eval_batches)
  lengths = np.diff(np.concatenate([[0], ends]))
  # Compile every period length ahead of time so that wall_time is pure run time.
  compiled = {n: _compiled(fn_key, period, carry, task.data, step_keys[:n])
              for n in sorted(set(lengths.tolist()))}
  losses, valid = [], []
  wall = 0.0
  bar = tqdm(total=steps, desc=task.name, unit="step") if progress else None
  done = 0
  for n, end in zip(lengths.tolist(), ends.tolist()):
    t0 = time.perf_counter()
    carry, (chunk_losses, v) = compiled[n](carry, task.data, step_keys[done:end])
    chunk_losses = np.asarray(chunk_losses[0])
    wall += time.perf_counter() - t0
    losses.append(chunk_losses)
    valid.append(float(v[0]))
    done = end
    healthy = inner.divergence_step(chunk_losses, blowup_factor,
                                    initial_loss=losses[0][0]) is None
    if bar is not None:
      bar.update(n)
      bar.set_postfix(loss=f"{chunk_losses[-1]:.4g}")
    if callback is not None:
      callback(end, {"train_loss": float(np.mean(chunk_losses)) if healthy else float("nan"),
                     "valid_loss": valid[-1] if healthy else float("nan")})
    if not healthy and stop_on_divergence:
      break
  if bar is not None:
    bar.close()
  return inner.mark_divergence(np.concatenate(losses), ends, valid, wall,
                               inner.eval_params(carry[1], carry[0]), blowup_factor)


@dataclasses.dataclass
class RunRecord:
  """What ``run`` produced: the run's result and the files it wrote."""
  result: inner.RunResult
  config: Dict[str, Any]
  run_dir: str
  metrics_path: str
  plot_path: str


def run(task_name: str, optimizer: str, steps: int, seed: int = 0,
        hparams: Optional[Dict[str, Any]] = None, out: Optional[str] = None,
        wandb_mode: str = "offline", eval_every: Optional[int] = None,
        eval_batches: int = 4, schedule: str = "constant",
        warmup_steps: Optional[int] = None, progress: bool = True,
        project: str = "metaopt") -> RunRecord:
  """Trains a registered task with a registered baseline optimizer and writes a run
  directory: ``config.json``, ``metrics.jsonl`` (one row per evaluation),
  ``curve.png`` and, unless disabled, a wandb run (offline by default).

  Args:
    task_name: a name from ``tasks.task_names()``.
    optimizer: a name from ``metaopt.optimizers.names()``.
    steps: training steps.
    seed: init / batch seed.
    hparams: hyper-parameters overriding the optimizer's defaults.
    out: run directory (default ``runs/<task>__<optimizer>__seed<seed>``).
    wandb_mode: ``offline`` | ``online`` | ``disabled``.
    eval_every: steps between validation losses (default ``steps // 50``, at least 1).
    schedule, warmup_steps: learning-rate schedule (see ``metaopt.optimizers.get``).
  """
  task = tasks.get(task_name)
  hparams = dict(hparams or {})
  full = optimizers.config(optimizer, **hparams)
  opt = optimizers.get(optimizer, schedule=schedule, total_steps=steps,
                       warmup_steps=warmup_steps, **hparams)
  eval_every = eval_every or max(1, steps // 50)
  run_dir = out or os.path.join("runs", f"{task_name}__{optimizer}__seed{seed}")
  config = {"task": task_name, "optimizer": optimizer, "hparams": full, "steps": steps,
            "seed": seed, "schedule": schedule, "warmup_steps": warmup_steps,
            "eval_every": eval_every, "eval_batches": eval_batches}
  logger = MetricsLogger(run_dir, config=config, project=project, mode=wandb_mode,
                         name=os.path.basename(os.path.normpath(run_dir)))
  try:
    result = train(task, opt, steps, seed=seed, eval_every=eval_every,
                   eval_batches=eval_batches, progress=progress, callback=logger.log)
    title = f"{task_name} / {optimizer} (seed {seed})"
    plot_path = plot_curves(read_metrics(logger.path), ["train_loss", "valid_loss"],
                            os.path.join(run_dir, "curve.png"), title=title)
    logger.log_images(steps, {"curve": plot_path})
  finally:
    logger.close()
  return RunRecord(result, config, run_dir, logger.path, plot_path)
