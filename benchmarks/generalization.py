"""Meta-generalization table: shipped learned optimizers vs tuned Adam as the task
moves away from meta-training (wider, deeper, longer).

  python benchmarks/generalization.py [--optimizers general-v1 general-mup-v1 ...]
      [--seeds 0 1] [--out benchmarks/generalization.md]

Tasks are MLP classifiers on the generated teacher data of the ``mlp_teacher_*``
meta-training families (``tasks.common.teacher_mlp_data``), each optimizer in its own
parametrization (μP tasks for ``mup`` optimizers, standard ones otherwise):

* ``like meta-training``: width 128, depth 2, 500 steps (meta-training: widths 32-128,
  depth 2, horizons 100-2,000);
* ``4x wider`` / ``16x wider``: width 512 / 2,048;
* ``2x deeper``: depth 4;
* ``10x longer``: 5,000 steps;
* ``small data``: width 128, depth 2, 1,000 steps on the first 256 training rows (the
  validation split unchanged), where overfitting decides the final validation loss.

Tuned Adam: the best of ``ADAM_LRS`` on mean final validation loss, tuned per row on
the very seeds it is scored on (which flatters Adam). Cells: final validation loss
(mean over seeds) and its ratio to tuned Adam's. Optimizers are shipped names or
``.safetensors`` paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tasks  # noqa: E402
from metaopt.lopt import io  # noqa: E402
from metaopt.optimizers.tune import train_config, train_lr_batch  # noqa: E402
from tasks import common, mlp  # noqa: E402

ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


@dataclasses.dataclass(frozen=True)
class Setting:
  label: str
  width: int
  depth: int
  steps: int
  train_rows: int = 0  # 0: the whole training split


SETTINGS = (
    Setting("like meta-training", 128, 2, 500),
    Setting("4x wider", 512, 2, 500),
    Setting("16x wider", 2048, 2, 500),
    Setting("2x deeper", 128, 4, 500),
    Setting("10x longer", 128, 2, 5000),
    Setting("small data", 128, 2, 1000, train_rows=256),
)


def make_task(setting: Setting, parametrization: str):
  data = common.teacher_mlp_data()
  if setting.train_rows:
    data = dict(data, train={k: v[:setting.train_rows] for k, v in data["train"].items()})
  return mlp.mlp_task(tasks.SYNTHETIC, (setting.width,) * setting.depth,
                      parametrization=parametrization, data=data)


def final_valid(result) -> float:
  v = np.asarray(result.valid_loss, np.float64)
  return float(v[-1]) if np.isfinite(v[-1]) else float("inf")


def tuned_adam(task, steps, seeds, eval_every):
  """(best lr, mean final validation loss over seeds) of Adam over ``ADAM_LRS``."""
  per_lr = np.zeros(len(ADAM_LRS))
  for seed in seeds:
    runs = train_lr_batch(task, "adam", ADAM_LRS, steps, seed=seed, eval_every=eval_every)
    per_lr += np.array([final_valid(r) for r in runs]) / len(seeds)
  best = int(np.argmin(per_lr))
  return ADAM_LRS[best], float(per_lr[best])


def learned_loss(name, task, steps, seeds, eval_every):
  lopt, _, _ = io.load_meta_params(name)
  mup = bool(getattr(lopt.config, "mup", False))
  params = task.init(jax.random.PRNGKey(0))
  opt = io.load(name, param_info=task.param_info(params) if mup else None)
  return float(np.mean([final_valid(train_config(task, opt, steps, s, eval_every))
                        for s in seeds]))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--optimizers", nargs="+", default=["general-v1", "general-mup-v1"])
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
  p.add_argument("--settings", nargs="+", default=None,
                 help="subset of setting labels (default: all)")
  p.add_argument("--out", default=None, help="also write the markdown table here")
  args = p.parse_args(argv)
  settings = [s for s in SETTINGS if args.settings is None or s.label in args.settings]
  lines = ["| optimizer | setting | learned final valid | tuned Adam final valid (lr) | "
           "learned / Adam |", "|---|---|---|---|---|"]
  adam_cache = {}
  t0 = time.time()
  for name in args.optimizers:
    lopt, _, _ = io.load_meta_params(name)
    par = "mup" if getattr(lopt.config, "mup", False) else "standard"
    for s in settings:
      task = make_task(s, par)
      eval_every = max(s.steps // 10, 1)
      key = (s, par)
      if key not in adam_cache:
        adam_cache[key] = tuned_adam(task, s.steps, args.seeds, eval_every)
      lr, adam = adam_cache[key]
      learned = learned_loss(name, task, s.steps, args.seeds, eval_every)
      row = (f"| {name} ({par}) | {s.label} | {learned:.4f} | {adam:.4f} ({lr:g}) | "
             f"{learned / adam:.3f} |")
      lines.append(row)
      print(row, flush=True)
  table = "\n".join(lines)
  footer = (f"\nseeds {args.seeds}; Adam lrs {ADAM_LRS}; {time.time() - t0:.0f} s; "
            f"command: python benchmarks/generalization.py "
            f"--optimizers {' '.join(args.optimizers)}")
  print(footer)
  if args.out:
    with open(args.out, "w") as f:
      f.write(table + "\n" + footer + "\n")


if __name__ == "__main__":
  main()
