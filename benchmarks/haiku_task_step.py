"""Step time of a built-in (hand-written jax) task vs the same model from haiku (not a test).

The built-in ``mlp_<dataset>_w<width>_d2`` task against ``tasks.from_haiku`` with
``hk.nets.MLP([width, width, 10])`` on the same data and batch size: one jitted
``metaopt.inner`` step with optax.adam (forward, backward, update), repetitions
interleaved (built-in, haiku, built-in, ...), and the median of the paired ratios
haiku / built-in printed. This is the measurement behind the statement in
``tasks/haiku_tasks.py`` on when built-in tasks stay hand-written.

Usage: ``python benchmarks/haiku_task_step.py [--dataset digits] [--width 32] [--reps 9]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import haiku as hk
import jax
import optax

import tasks
from metaopt import inner
from tasks.common import features_of, softmax_cross_entropy


def haiku_twin(task: tasks.Task, dataset: str, width: int) -> tasks.Task:
  def forward(batch):
    return hk.nets.MLP([width, width, 10])(features_of(batch))

  def loss_fn(logits, batch):
    return softmax_cross_entropy(logits, batch["label"])

  return tasks.from_haiku(f"haiku_{task.name}", forward, loss_fn, dataset,
                          batch_size=task.abstract_batch["x"].shape[0])


def timer(task: tasks.Task, steps: int):
  opt = optax.adam(1e-3)
  keys = jax.random.split(jax.random.PRNGKey(1), steps)
  run = jax.jit(lambda p, s, data, k: inner.run_steps(task, opt, p, s, data, k))
  params = task.init(jax.random.PRNGKey(0))
  state = opt.init(params)
  jax.block_until_ready(run(params, state, task.data, keys))  # Compile.

  def once() -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(run(params, state, task.data, keys))
    return (time.perf_counter() - t0) / steps

  return once


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="digits")
  p.add_argument("--width", type=int, default=32)
  p.add_argument("--reps", type=int, default=9)
  p.add_argument("--steps", type=int, default=200, help="steps per timed scan")
  args = p.parse_args()
  tag = tasks.common.dataset_tag(args.dataset)
  builtin = tasks.get(f"mlp_{tag}_w{args.width}_d2")
  twin = haiku_twin(builtin, args.dataset, args.width)
  a, b = timer(builtin, args.steps), timer(twin, args.steps)
  pairs = [(a(), b()) for _ in range(args.reps)]
  ratios = [hb / ha for ha, hb in pairs]
  print(f"machine: {platform.platform()}, {jax.devices()[0].platform}, jax {jax.__version__}")
  print(f"task {builtin.name}: built-in "
        f"{1e6 * statistics.median(x for x, _ in pairs):.1f} us/step, "
        f"haiku {1e6 * statistics.median(y for _, y in pairs):.1f} us/step")
  print(f"haiku / built-in step time: median of {len(ratios)} paired ratios "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
  main()
