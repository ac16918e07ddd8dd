"""Inner training: run any optax optimizer on a Task, in jitted chunks of steps.

Used by ``metaopt train``, baseline tuning and the leaderboard. The step loop is a
``lax.scan`` over ``chunk`` steps per jitted call, so Python overhead is paid once
per chunk; the progress bar and the evaluation run between chunks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasks.base import Task


@dataclasses.dataclass
class TrainResult:
  """Curves of one run.

  Attributes:
    train_loss: (steps,) float64 per-step training loss (NaN after divergence).
    eval_steps: (E,) steps at which the validation loss was measured.
    valid_loss: (E,) mean ``inner_valid`` loss over ``eval_batches`` batches.
    wall_time: seconds spent in training steps (compilation excluded).
    diverged: True when a non-finite loss stopped the run early.
    params: final parameters.
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


def _update(opt, grads, state, params, loss):
  if isinstance(opt, optax.GradientTransformationExtraArgs):
    return opt.update(grads, state, params, value=loss)
  return opt.update(grads, state, params)


def make_step(task: Task, opt: optax.GradientTransformation) -> Callable:
  """``(params, opt_state, data, key) -> (params, opt_state, loss)``: one training step."""

  def step(params, opt_state, data, key):
    k_batch, k_loss = jax.random.split(key)
    batch = task.batch(data, k_batch, "train")
    loss, grads = jax.value_and_grad(task.loss)(params, batch, k_loss)
    updates, opt_state = _update(opt, grads, opt_state, params, loss)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def make_eval(task: Task, split: str = "inner_valid", num_batches: int = 4) -> Callable:
  """``(params, data, key) -> mean loss`` over ``num_batches`` batches of ``split``."""

  def evaluate(params, data, key):
    keys = jax.random.split(key, num_batches)

    def one(k):
      kb, kl = jax.random.split(k)
      return task.loss(params, task.batch(data, kb, split), kl)

    return jnp.mean(jax.lax.map(one, keys))

  return jax.jit(evaluate)


def train(task: Task, opt: optax.GradientTransformation, steps: int, seed: int = 0,
          eval_every: int = 50, eval_batches: int = 4, chunk: int = 50,
          progress: bool = False, callback: Optional[Callable[[int, Dict], None]] = None,
          stop_on_divergence: bool = True) -> TrainResult:
  """Trains ``task`` with ``opt`` for ``steps`` steps.

  Args:
    task: the task.
    opt: any optax transformation (``GradientTransformationExtraArgs`` receive the
      loss as ``value``).
    steps: number of optimizer steps.
    seed: seeds init, batches and eval batches; same seed, same numbers.
    eval_every: validation loss every this many steps (and at the last step).
    chunk: steps per jitted ``lax.scan`` call.
    progress: show a tqdm progress bar.
    callback: ``callback(step, metrics)`` after each evaluation (e.g. a logger).
    stop_on_divergence: stop at the first non-finite loss; the rest of the curve is NaN.
  """
  if steps <= 0:
    raise ValueError(f"steps must be positive, got {steps}.")
  key = jax.random.PRNGKey(seed)
  k_init, k_train, k_eval = jax.random.split(key, 3)
  params = task.init(k_init)
  opt_state = opt.init(params)
  step_fn = make_step(task, opt)
  evaluate = make_eval(task, num_batches=eval_batches)
  chunk = max(1, min(chunk, eval_every, steps))

  @jax.jit
  def run_chunk(params, opt_state, data, keys):
    def body(carry, k):
      p, s = carry
      p, s, loss = step_fn(p, s, data, k)
      return (p, s), loss
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), keys)
    return params, opt_state, losses

  step_keys = jax.random.split(k_train, steps)
  losses: List[np.ndarray] = []
  eval_steps, valid = [], []
  diverged = False
  wall = 0.0
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=steps, desc=task.name, unit="step")
  done = 0
  while done < steps:
    n = min(chunk, steps - done)
    n_keys = step_keys[done:done + n]  # A short last chunk compiles once more.
    t0 = time.perf_counter()
    params, opt_state, chunk_losses = run_chunk(params, opt_state, task.data, n_keys)
    chunk_losses = np.asarray(chunk_losses)
    # Exclude the first call (compilation) from the wall time estimate.
    dt = time.perf_counter() - t0
    wall += dt if done else 0.0
    losses.append(chunk_losses)
    done += n
    if bar is not None:
      bar.update(n)
      bar.set_postfix(loss=f"{chunk_losses[-1]:.4g}")
    if not np.all(np.isfinite(chunk_losses)):
      diverged = True
      if stop_on_divergence:
        break
    if done % eval_every == 0 or done == steps:
      v = float(evaluate(params, task.data, jax.random.fold_in(k_eval, done)))
      eval_steps.append(done)
      valid.append(v)
      if callback is not None:
        callback(done, {"train_loss": float(np.mean(chunk_losses)), "valid_loss": v})
  if bar is not None:
    bar.close()
  train_loss = np.concatenate(losses).astype(np.float64)
  if len(train_loss) < steps:
    train_loss = np.concatenate([train_loss, np.full(steps - len(train_loss), np.nan)])
  if diverged and stop_on_divergence:
    eval_steps.append(steps)
    valid.append(float("nan"))
  # Scale the measured time to all steps (first chunk was compile + run).
  timed_steps = max(1, min(done, steps) - min(chunk, done))
  wall_time = wall / timed_steps * steps if done > chunk else float("nan")
  return TrainResult(train_loss, np.asarray(eval_steps), np.asarray(valid, np.float64),
                     wall_time, diverged, params)
