"""Executes leaderboard runs: one compiled program per (task, optimizer, static config).

A run is ``metaopt.inner.run`` (the seed rule and divergence rule of every inner
loop), so its curves match ``metaopt.train.train`` for the same optimizer and seed.
The whole run is one compiled program (an outer scan over evaluation periods around
an inner scan over steps), compiled ahead of time, so the measured wall time excludes
compilation and Python overhead.

The float hyper-parameters (learning rate, b1, ...) and a learned optimizer's theta
are *arguments* of the compiled program: a whole learning-rate sweep and every
seed reuse one compilation. An optimizer whose constructor needs concrete values
(Python control flow on a hyper-parameter) falls back to one compilation per
config, transparently.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import inner
from metaopt.eval.entrants import Entrant
from metaopt.eval.store import config_key
from tasks.base import Task


def make_run_fn(task: Task, build: Callable[[Any, Any, Any], Any], steps: int, eval_every: int,
                eval_batches: int) -> Callable:
  """``run(hparams, aux, seed, data) -> (train_loss (steps,), valid_loss (E,))``:
  ``inner.run`` with the optimizer built from traced arguments.

  Args:
    task: the task.
    build: ``(hparams, aux, param_info) -> optax transformation``.
    steps, eval_every: budget and validation period (``inner.eval_schedule``).
    eval_batches: ``inner_valid`` batches averaged per evaluation.
  """

  def run(hparams, aux, seed, data):
    _, losses, valid = inner.run(task, lambda info: build(hparams, aux, info), seed, data,
                                 steps, eval_every, eval_batches)
    return losses, valid

  return run


class Runner:
  """Compiles and executes runs; caches compiled programs and counts trained runs.

  ``prefetch`` starts compilations on a thread pool (XLA compiles without holding
  the GIL), so several programs compile at once; ``wait`` before timed runs.

  Attributes:
    trained: number of runs executed (a resumed leaderboard that finds everything
      stored trains none).
    compiled: number of programs compiled.
  """

  def __init__(self, compile_workers: int = 1):
    self._cache: Dict[Tuple, Future] = {}
    self._static_only: set = set()
    self._lock = threading.Lock()
    self._pool = ThreadPoolExecutor(compile_workers) if compile_workers > 1 else None
    self.trained = 0
    self.compiled = 0

  def wait(self) -> None:
    """Blocks until every started compilation has finished (so that timed runs do
    not share the CPU with compilations)."""
    with self._lock:
      futures = list(self._cache.values())
    for f in futures:
      f.exception()

  def clear(self) -> None:
    """Drops the compiled programs (e.g. when moving on to the next task)."""
    self.wait()
    with self._lock:
      self._cache.clear()
      self._static_only.clear()

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)

  def _compile(self, task: Task, entrant: Entrant, static: Dict[str, Any],
               numeric_static: Dict[str, float], steps: int, eval_every: int,
               eval_batches: int, example_hp: Dict[str, Any], aux: Any):
    def build(hparams, aux_, param_info):
      return entrant.build(dict(hparams, **numeric_static), static, aux_, param_info)
    run = make_run_fn(task, build, steps, eval_every, eval_batches)
    compiled = jax.jit(run).lower(example_hp, aux, jnp.int32(0), task.data).compile()
    with self._lock:
      self.compiled += 1
    return compiled

  def _compile_into(self, fut: Future, args) -> None:
    try:
      fut.set_result(self._compile(*args))
    except Exception as e:  # pylint: disable=broad-except
      fut.set_exception(e)

  def _traced(self, task, entrant, config, steps, eval_every, eval_batches, pool):
    """The future of the program taking ``config``'s floats as arguments (cached)."""
    numeric, static = entrant.split_config(config)
    base = (task.name, entrant.name, entrant.fingerprint, config_key(static), steps,
            eval_every, eval_batches)
    with self._lock:
      fut = self._cache.get(base)
      if fut is None:
        fut = Future()
        self._cache[base] = fut
        start = True
      else:
        start = False
    if start:
      hp = {k: jnp.float32(v) for k, v in numeric.items()}
      args = (task, entrant, static, {}, steps, eval_every, eval_batches, hp, entrant.aux())
      if pool is not None:
        pool.submit(self._compile_into, fut, args)
      else:
        self._compile_into(fut, args)
    return base, fut

  def prefetch(self, task: Task, entrant: Entrant, config: Dict[str, Any], steps: int,
               eval_every: int, eval_batches: int = 4) -> None:
    """Starts compiling the program for ``config`` in the background (no-op without
    a pool or when cached)."""
    if self._pool is not None:
      self._traced(task, entrant, config, steps, eval_every, eval_batches, self._pool)

  def execute(self, task: Task, entrant: Entrant, config: Dict[str, Any], seed: int,
              steps: int, eval_every: int, eval_batches: int = 4) -> inner.RunResult:
    """Trains one run; exceptions become an ``error`` result (never raised),
    except ``KeyboardInterrupt``."""
    try:
      numeric, static = entrant.split_config(config)
      aux = entrant.aux()
      hp = {k: jnp.float32(v) for k, v in numeric.items()}
      base, fut = self._traced(task, entrant, config, steps, eval_every, eval_batches, None)
      compiled = None
      if base not in self._static_only:
        try:
          compiled = fut.result()
        except (jax.errors.JAXTypeError, TypeError):
          # The constructor needs concrete hyper-parameters: compile per config.
          self._static_only.add(base)
      if compiled is None:
        key = base + (config_key(numeric),)
        if key not in self._cache:
          f = Future()
          f.set_result(self._compile(task, entrant, static, numeric, steps, eval_every,
                                     eval_batches, {}, aux))
          self._cache[key] = f
        compiled = self._cache[key].result()
        hp = {}
      self.trained += 1
      t0 = time.perf_counter()
      losses, valid = compiled(hp, aux, jnp.int32(seed), task.data)
      losses, valid = jax.block_until_ready((losses, valid))
      wall = time.perf_counter() - t0
      return inner.mark_divergence(np.asarray(losses), inner.eval_schedule(steps, eval_every),
                                   np.asarray(valid), wall)
    except KeyboardInterrupt:
      raise
    except Exception as e:  # pylint: disable=broad-except
      tb = traceback.format_exc(limit=3)
      return inner.RunResult.failed(f"{type(e).__name__}: {e}\n{tb}"[:4000])
