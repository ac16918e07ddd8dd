"""Learning-rate sweep: one ``train`` per learning rate vs all rates at once (vmap).

Runs ``metaopt.optimizers.tune`` twice on the same task, grid and seed: with
``vectorize=False`` (one compiled ``train`` per learning rate) and ``vectorize=True``
(``train_lr_batch``: the learning rate is a traced hyper-parameter and the trials are
vmapped). Both times include compilation, which is what a user waits for. Also times
``train`` run twice with the same task and optimizer objects (the second call reuses
the compiled programs) to show what the compile cache saves per extra seed.

  python benchmarks/tune_lr_sweep.py --task mlp_digits_w32_d2 --optimizer adam \
      --points 8 --steps 200
"""

import argparse
import time

import numpy as np


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--task", default="mlp_digits_w32_d2")
  p.add_argument("--optimizer", default="adam")
  p.add_argument("--points", type=int, default=8, help="learning rates in the grid")
  p.add_argument("--steps", type=int, default=200)
  args = p.parse_args()
  import tasks  # pylint: disable=import-outside-toplevel
  from metaopt import optimizers  # pylint: disable=import-outside-toplevel
  from metaopt.train import train  # pylint: disable=import-outside-toplevel

  task = tasks.get(args.task)
  kw = dict(steps=args.steps, method="grid", grid_points=args.points,
            search=("learning_rate",))
  times, results = {}, {}
  for vectorize in (False, True):
    t0 = time.perf_counter()
    results[vectorize] = optimizers.tune(task, args.optimizer, vectorize=vectorize, **kw)
    times[vectorize] = time.perf_counter() - t0
  diff = max(abs(a.score - b.score) / max(abs(b.score), 1e-12)
             for a, b in zip(results[True].trials, results[False].trials)
             if np.isfinite(b.score))
  print(f"task={args.task} optimizer={args.optimizer} points={args.points} "
        f"steps={args.steps}")
  print(f"lr sweep, one train per lr: {times[False]:.2f}s")
  print(f"lr sweep, vmapped:          {times[True]:.2f}s")
  print(f"speed-up: {times[False] / times[True]:.2f}x   max relative score difference: "
        f"{diff:.1e}   best lr: {results[True].best_config['learning_rate']:.3g}")

  opt = optimizers.get(args.optimizer)
  t0 = time.perf_counter()
  first = train(task, opt, args.steps, seed=0)
  t1 = time.perf_counter()
  train(task, opt, args.steps, seed=1)
  t2 = time.perf_counter()
  print(f"train, first seed (compiles): {t1 - t0:.2f}s; second seed (cached): "
        f"{t2 - t1:.2f}s; ratio {(t1 - t0) / (t2 - t1):.1f}x; "
        f"steps alone {first.wall_time:.2f}s")


if __name__ == "__main__":
  main()
