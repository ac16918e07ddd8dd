"""Held-out check of a meta-trained optimizer through the public API.

Loads the exported theta with ``metaopt.load``, builds the untrained theta of the same
architecture, and trains fresh tasks of the family (seeds never used in meta-training:
``family.sample(PRNGKey(10_000 + i))``) with each and with Adam 1e-3 for the same
number of steps using ``metaopt.train.train``. Prints the final training loss (mean of
the last 10% of steps) per optimizer, averaged over tasks.

  python benchmarks/meta_train_heldout.py runs/mlp_digits_cpu/mlp_digits_cpu.safetensors \
      --family mlp_digits_w32_d2_family --steps 200 --tasks 8
"""

import argparse
import sys

import jax
import numpy as np
import optax


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("path", help="exported theta (.safetensors)")
  p.add_argument("--family", default="mlp_digits_w32_d2_family")
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--tasks", type=int, default=8)
  args = p.parse_args()
  import metaopt  # pylint: disable=import-outside-toplevel
  import tasks  # pylint: disable=import-outside-toplevel
  from metaopt.lopt import io  # pylint: disable=import-outside-toplevel
  from metaopt.train import train  # pylint: disable=import-outside-toplevel

  header, _ = io._read(io.resolve(args.path))  # pylint: disable=protected-access
  lopt = metaopt.lopt.build(header["arch"], header["config"])
  untrained = lopt.transform(lopt.init_meta_params(jax.random.PRNGKey(0)))
  opts = {"meta-trained": metaopt.load(args.path), "untrained theta": untrained,
          "adam 1e-3": optax.adam(1e-3)}
  family = tasks.get_family(args.family)
  finals = {name: [] for name in opts}
  for i in range(args.tasks):
    task = family.task(family.sample(jax.random.PRNGKey(10_000 + i)))
    for name, opt in opts.items():
      res = train(task, opt, args.steps, seed=10_000 + i, eval_every=args.steps)
      tail = max(1, args.steps // 10)
      finals[name].append(float(np.mean(res.train_loss[-tail:])))
  print(f"{args.tasks} held-out tasks of {args.family}, {args.steps} steps, final train loss "
        f"(mean of last 10% of steps), mean +- std over tasks:")
  for name, vals in finals.items():
    print(f"  {name:15s} {np.mean(vals):.4f} +- {np.std(vals):.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
