"""Leaderboard runner vs naive per-run training, side by side in one process.

Workload: what the leaderboard does for one tuned baseline on one task — a sweep of
``--lr-points`` learning rates on the tuning seed, then ``--seeds`` evaluation runs.

* naive: ``metaopt.train.train`` once per run with a freshly built optimizer (a new
  compilation per learning rate; the train program's cache serves the seeds);
* runner: ``metaopt.eval.runner.Runner`` — one compiled program with the learning
  rate as an argument, reused by every trial and seed.

Prints total seconds of each and the ratio. Usage:
  python benchmarks/leaderboard_runner.py [--task quadratic_d10_cond1000] [--steps 100]
"""

import argparse
import time

import numpy as np

import tasks
from metaopt import optimizers
from metaopt.eval import entrants
from metaopt.eval.runner import Runner
from metaopt.train import train


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--task", default="quadratic_d10_cond1000")
  p.add_argument("--optimizer", default="adam")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--eval-every", type=int, default=25)
  p.add_argument("--lr-points", type=int, default=6)
  p.add_argument("--seeds", type=int, default=3)
  args = p.parse_args()
  task = tasks.get(args.task)
  spec = optimizers.spec(args.optimizer)
  lrs = spec.search_space["learning_rate"].grid(args.lr_points)
  jobs = [(lr, 10000) for lr in lrs] + [(lrs[len(lrs) // 2], s) for s in range(args.seeds)]

  t0 = time.perf_counter()
  naive = [train(task, optimizers.get(args.optimizer, learning_rate=lr), args.steps, seed=s,
                 eval_every=args.eval_every).train_loss
           for lr, s in jobs]
  t_naive = time.perf_counter() - t0

  t0 = time.perf_counter()
  runner, e = Runner(), entrants.baseline(args.optimizer)
  fast = [runner.execute(task, e, optimizers.config(args.optimizer, learning_rate=lr), s,
                         args.steps, args.eval_every).train_loss for lr, s in jobs]
  t_runner = time.perf_counter() - t0

  # float32: a traced learning rate rounds differently from a constant one.
  rel = max(float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))
            for a, b in zip(naive, fast))
  print(f"task {args.task}, {args.optimizer}, {len(jobs)} runs x {args.steps} steps")
  print(f"naive train() per run: {t_naive:.1f} s")
  print(f"leaderboard Runner:    {t_runner:.1f} s ({runner.compiled} compilation(s))")
  print(f"speedup: {t_naive / t_runner:.1f}x; max relative curve difference: {rel:.1e}")


if __name__ == "__main__":
  main()
