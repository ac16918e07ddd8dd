"""Inner training: run any optax optimizer on a Task, in jitted chunks of steps.

Used by ``metaopt train``, baseline tuning and the leaderboard. The step loop is a
``lax.scan`` over ``chunk`` steps per jitted call, so Python overhead is paid once
per chunk; the progress bar and the evaluation run between chunks.

Two optimizer conventions are honoured so that every baseline runs through one loop:

* ``TransformationWithObjective``: ``update`` also receives ``obj_fn`` (params ->
  loss on the current batch), for Hessian-vector products (Sophia-H).
* Schedule-free optimizers (``optax.contrib.schedule_free*``): the evaluated and
  returned parameters are ``schedule_free_eval_params`` (the averaged iterate x),
  not the gradient point y.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib

from tasks.base import Task


class TransformationWithObjective(optax.GradientTransformationExtraArgs):
  """An optax transformation whose ``update`` also needs ``obj_fn=params -> loss``
  of the current batch (e.g. Sophia-H's Hutchinson Hessian estimate). ``train``
  passes it; other loops must pass it too."""
  __slots__ = ()


@dataclasses.dataclass
class TrainResult:
  """Curves of one run.

  Attributes:
    train_loss: (steps,) float64 per-step training loss (NaN after divergence).
    eval_steps: (E,) steps at which the validation loss was measured.
    valid_loss: (E,) mean ``inner_valid`` loss over ``eval_batches`` batches.
    wall_time: seconds spent in the training steps that ran (compilation and
      evaluation excluded).
    diverged: True when a non-finite loss was seen.
    params: final parameters (the evaluation iterate for schedule-free optimizers).
  """
  train_loss: np.ndarray
  eval_steps: np.ndarray
  valid_loss: np.ndarray
  wall_time: float
  diverged: bool
  params: Any = None

  @property
  def final_train_loss(self) -> float:
    return float(self.train_loss[-1])

  @property
  def final_valid_loss(self) -> float:
    return float(self.valid_loss[-1]) if len(self.valid_loss) else float("nan")


def _update(opt, grads, state, params, loss, obj_fn):
  if isinstance(opt, TransformationWithObjective):
    return opt.update(grads, state, params, value=loss, obj_fn=obj_fn)
  if isinstance(opt, optax.GradientTransformationExtraArgs):
    return opt.update(grads, state, params, value=loss)
  return opt.update(grads, state, params)


def make_step(task: Task, opt: optax.GradientTransformation) -> Callable:
  """``(params, opt_state, data, key) -> (params, opt_state, loss)``: one training step."""

  def step(params, opt_state, data, key):
    k_batch, k_loss = jax.random.split(key)
    batch = task.batch(data, k_batch, "train")
    obj_fn = lambda p: task.loss(p, batch, k_loss)
    loss, grads = jax.value_and_grad(obj_fn)(params)
    updates, opt_state = _update(opt, grads, opt_state, params, loss, obj_fn)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def eval_params(opt_state, params):
  """The parameters to evaluate: ``params``, or for a schedule-free optimizer (its
  state found anywhere in ``opt_state``) the averaged iterate."""
  found = [s for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda s: isinstance(s, contrib.ScheduleFreeState))
           if isinstance(s, contrib.ScheduleFreeState)]
  if len(found) == 1:
    return contrib.schedule_free_eval_params(found[0], params)
  return params


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


def _eval_fn(task: Task, split: str, num_batches: int) -> Callable:

  def evaluate(params, data, key):
    keys = jax.random.split(key, num_batches)

    def one(k):
      kb, kl = jax.random.split(k)
      return task.loss(params, task.batch(data, kb, split), kl)

    return jnp.mean(jax.lax.map(one, keys))

  return evaluate


def make_eval(task: Task, split: str = "inner_valid", num_batches: int = 4) -> Callable:
  """``(params, data, key) -> mean loss`` over ``num_batches`` batches of ``split``."""
  return jax.jit(_eval_fn(task, split, num_batches))


def seed_keys(seed: int, steps: int):
  """``(init_key, step_keys (steps, 2), eval_key)`` of a run with ``seed``; an
  evaluation after ``done`` steps uses ``fold_in(eval_key, done)``."""
  k_init, k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
  return k_init, jax.random.split(k_train, steps), k_eval


def _chunk_sizes(steps: int, chunk: int, eval_every: int) -> List[int]:
  """Chunk lengths covering ``steps`` whose ends include every evaluation step."""
  sizes, done = [], 0
  while done < steps:
    next_eval = (done // eval_every + 1) * eval_every
    n = min(chunk, steps - done, next_eval - done)
    sizes.append(n)
    done += n
  return sizes


def train(task: Task, opt: optax.GradientTransformation, steps: int, seed: int = 0,
          eval_every: int = 50, eval_batches: int = 4, chunk: int = 50,
          progress: bool = False, callback: Optional[Callable[[int, Dict], None]] = None,
          stop_on_divergence: bool = True) -> TrainResult:
  """Trains ``task`` with ``opt`` for ``steps`` steps.

  Args:
    task: the task.
    opt: any optax transformation (``GradientTransformationExtraArgs`` receive the
      loss as ``value``; ``TransformationWithObjective`` also ``obj_fn``).
    steps: number of optimizer steps.
    seed: seeds init (``split(PRNGKey(seed), 3)[0]``), train batches and eval
      batches; same seed, same numbers.
    eval_every: validation loss every this many steps (and at the last step).
    eval_batches: ``inner_valid`` batches averaged per evaluation.
    chunk: steps per jitted ``lax.scan`` call.
    progress: show a tqdm progress bar.
    callback: ``callback(step, metrics)`` after each evaluation (e.g. a logger);
      ``metrics`` has ``train_loss`` (mean since the last evaluation) and ``valid_loss``.
    stop_on_divergence: stop at the first non-finite loss; the rest of the curve is
      NaN and a NaN validation loss is recorded at ``steps``.
  """
  if steps <= 0:
    raise ValueError(f"steps must be positive, got {steps}.")
  if eval_every <= 0 or chunk <= 0:
    raise ValueError(f"eval_every and chunk must be positive, got {eval_every}, {chunk}.")
  k_init, step_keys, k_eval = seed_keys(seed, steps)
  params = task.init(k_init)
  opt_state = opt.init(params)
  step_fn = make_step(task, opt)
  fn_key = (task.loss, task.batch, type(opt), opt)
  evaluate = _eval_fn(task, "inner_valid", eval_batches)

  def run_chunk(params, opt_state, data, keys):
    def body(carry, k):
      p, s = carry
      p, s, loss = step_fn(p, s, data, k)
      return (p, s), loss
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), keys)
    return params, opt_state, losses

  sizes = _chunk_sizes(steps, chunk, eval_every)
  # Compile every chunk length ahead of time so that wall_time is pure run time.
  compiled = {n: _compiled(("chunk",) + fn_key, run_chunk, params, opt_state, task.data,
                           step_keys[:n]) for n in sorted(set(sizes))}
  eval_params0 = eval_params(opt_state, params)
  compiled_eval = _compiled(("eval", task.loss, task.batch, eval_batches), evaluate,
                            eval_params0, task.data, k_eval)

  losses: List[np.ndarray] = []
  eval_steps, valid = [], []
  diverged = False
  wall = 0.0
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=steps, desc=task.name, unit="step")
  done, since_eval = 0, []
  for n in sizes:
    t0 = time.perf_counter()
    params, opt_state, chunk_losses = compiled[n](params, opt_state, task.data,
                                                  step_keys[done:done + n])
    chunk_losses = np.asarray(chunk_losses)
    wall += time.perf_counter() - t0
    losses.append(chunk_losses)
    since_eval.append(chunk_losses)
    done += n
    if bar is not None:
      bar.update(n)
      bar.set_postfix(loss=f"{chunk_losses[-1]:.4g}")
    if not np.all(np.isfinite(chunk_losses)):
      diverged = True
      if stop_on_divergence:
        break
    if done % eval_every == 0 or done == steps:
      v = float(compiled_eval(eval_params(opt_state, params), task.data,
                              jax.random.fold_in(k_eval, done)))
      eval_steps.append(done)
      valid.append(v)
      if callback is not None:
        callback(done, {"train_loss": float(np.mean(np.concatenate(since_eval))),
                        "valid_loss": v})
      since_eval = []
  if bar is not None:
    bar.close()
  train_loss = np.concatenate(losses).astype(np.float64)
  if len(train_loss) < steps:
    train_loss = np.concatenate([train_loss, np.full(steps - len(train_loss), np.nan)])
  if diverged and stop_on_divergence:
    eval_steps.append(steps)
    valid.append(float("nan"))
    if callback is not None:
      callback(steps, {"train_loss": float("nan"), "valid_loss": float("nan")})
  return TrainResult(train_loss, np.asarray(eval_steps), np.asarray(valid, np.float64),
                     wall, diverged, eval_params(opt_state, params))


@dataclasses.dataclass
class RunOutput:
  """What ``run`` produced: the curves and the files it wrote."""
  result: TrainResult
  config: Dict[str, Any]
  run_dir: str
  metrics_path: str
  plot_path: str


def run(task_name: str, optimizer: str, steps: int, seed: int = 0,
        hparams: Optional[Dict[str, Any]] = None, out: Optional[str] = None,
        wandb_mode: str = "offline", eval_every: Optional[int] = None,
        eval_batches: int = 4, schedule: str = "constant",
        warmup_steps: Optional[int] = None, progress: bool = True,
        project: str = "metaopt") -> RunOutput:
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
  # Imported here: the optimizer registry imports this module.
  import tasks  # pylint: disable=import-outside-toplevel
  from metaopt import optimizers  # pylint: disable=import-outside-toplevel
  from metaopt.runlog import (MetricsLogger, plot_curves,  # pylint: disable=import-outside-toplevel
                               read_metrics)

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
  finally:
    logger.close()
  title = f"{task_name} / {optimizer} (seed {seed})"
  plot_path = plot_curves(read_metrics(logger.path), ["train_loss", "valid_loss"],
                          os.path.join(run_dir, "curve.png"), title=title)
  return RunOutput(result, config, run_dir, logger.path, plot_path)
