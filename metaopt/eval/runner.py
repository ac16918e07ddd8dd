"""Executes leaderboard runs: one compiled program per (task, entrant, static config),
vmapped over the trials of a study.

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

import time
import traceback
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import inner
from metaopt.eval.entrants import Entrant
from metaopt.eval.store import config_key
from tasks.base import Task


def make_batch_run_fn(task: Task, build: Callable[[Any, Any, Any], Any], steps: int,
                      eval_every: int, eval_batches: int) -> Callable:
  """``run(hparams (B,), aux, seeds (B,), data) -> (train (B, steps), valid (B, E),
  valid_error (B, E))``: ``inner.run`` vmapped over configs and seeds (the trials of
  AlgoPerf studies), with the validation error rate (NaN for non-classifiers)."""

  def run(hparams, aux, seed, data):
    _, losses, valid, err = inner.run(task, lambda info: build(hparams, aux, info), seed, data,
                                      steps, eval_every, eval_batches, error_rate=True)
    return losses, valid, err

  return jax.vmap(run, in_axes=(0, None, 0, None))


def execute_batch(task: Task, entrant: Entrant, configs, seeds, steps: int, eval_every: int,
                  eval_batches: int = 4) -> Tuple[list, int]:
  """Trains ``configs[i]`` with ``seeds[i]`` for every ``i`` (AlgoPerf trials) and
  returns ``(RunResults in order, programs compiled)``. Configs sharing their static
  part run as one vmapped program with the floats as traced arguments; a group
  whose constructor needs concrete floats runs one program per config. The
  ``wall_time`` of a result is its share of its batch (evaluation included): the
  leaderboard's time per step comes from ``time_steps`` instead. Exceptions become
  ``error`` results."""
  results: list = [None] * len(configs)
  groups: Dict[str, list] = {}
  for i, cfg in enumerate(configs):
    groups.setdefault(config_key(entrant.split_config(cfg)[1]), []).append(i)
  compiled_count = 0
  aux = entrant.aux()
  schedule = inner.eval_schedule(steps, eval_every)
  for idx in groups.values():
    static = entrant.split_config(configs[idx[0]])[1]
    numerics = [entrant.split_config(configs[i])[0] for i in idx]
    try:
      batches = [(idx, {k: jnp.asarray([n[k] for n in numerics], jnp.float32)
                        for k in numerics[0]}, {})]
      for attempt in range(2):
        try:
          outs = []
          for sub, hp, numeric_static in batches:
            def build(hparams, aux_, info, numeric_static=numeric_static):
              return entrant.build(dict(hparams, **numeric_static), static, aux_, info,
                                   total_steps=steps)
            fn = make_batch_run_fn(task, build, steps, eval_every, eval_batches)
            sd = jnp.asarray([seeds[i] for i in sub], jnp.int32)
            prog = jax.jit(fn).lower(hp, aux, sd, task.data).compile()
            compiled_count += 1
            t0 = time.perf_counter()
            out = jax.block_until_ready(prog(hp, aux, sd, task.data))
            outs.append((sub, out, time.perf_counter() - t0))
          break
        except (jax.errors.JAXTypeError, TypeError):
          if attempt:
            raise
          # The constructor needs concrete floats: one program per config.
          batches = [([i], {}, n) for i, n in zip(idx, numerics)]
      for sub, (losses, valid, err), wall in outs:
        losses, valid, err = (np.asarray(x, np.float64) for x in (losses, valid, err))
        for j, i in enumerate(sub):
          r = inner.mark_divergence(losses[j], schedule, valid[j], wall / len(sub))
          e = err[j].copy()
          if r.diverged_at is not None:
            e[schedule >= r.diverged_at] = np.nan
          r.valid_error = None if np.all(np.isnan(err[j])) else e
          results[i] = r
    except KeyboardInterrupt:
      raise
    except Exception as ex:  # pylint: disable=broad-except
      tb = traceback.format_exc(limit=3)
      for i in idx:
        results[i] = inner.RunResult.failed(f"{type(ex).__name__}: {ex}\n{tb}"[:4000])
  return results, compiled_count


def time_steps(task: Task, entrant: Entrant, config: Dict[str, Any], budget: int,
               steps: int = 32, repeats: int = 5, seed: int = 0,
               compile_seconds: Optional[list] = None) -> list:
  """Seconds of ``steps`` compiled training steps (``inner.run_steps``: the task's
  step and the optimizer's own update, no evaluation), measured ``repeats`` times
  after a warm-up call; ``budget`` is the run length a schedule spans. The seconds
  spent compiling the steps are appended to ``compile_seconds`` when given."""
  numeric, static = entrant.split_config(config)
  hp = {k: jnp.float32(v) for k, v in numeric.items()}
  aux = entrant.aux()

  def make(hparams, aux_, params):
    info = task.param_info(params) if task.param_info is not None else None
    return entrant.build(hparams, static, aux_, info, total_steps=budget)

  def init(hparams, aux_, key):
    params = task.init(key)
    return inner.initial_carry(task, make(hparams, aux_, params), params, key)

  def steps_fn(hparams, aux_, carry, data, keys):
    # The carry holds the model state of a stateful task (BatchNorm statistics).
    return inner.run_steps(task, make(hparams, aux_, carry[0]), carry[0], carry[1], data, keys,
                           carry[2] if task.stateful else None)

  k_init, keys = inner.seed_keys(seed, steps)
  carry = jax.jit(init)(hp, aux, k_init)
  t0 = time.perf_counter()
  prog = jax.jit(steps_fn).lower(hp, aux, carry, task.data, keys).compile()
  if compile_seconds is not None:
    compile_seconds.append(time.perf_counter() - t0)
  jax.block_until_ready(prog(hp, aux, carry, task.data, keys))  # Warm-up.
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(prog(hp, aux, carry, task.data, keys))
    out.append(time.perf_counter() - t0)
  return out
