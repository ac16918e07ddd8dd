"""Per-instance ALISTA against ALISTA with fixed scalars, in and out of distribution.

Both are trained with their default recipe (``lista.RECIPES``: stage-wise, every new
layer a copy of the one before) on one problem (default ``lasso_m256_n512_p0.1_snr40``)
and evaluated, unchanged, on held-out instances (``test`` key stream) of

* the training distribution;
* sparser and denser codes (p = 0.05, 0.2), the same noise;
* more noise (SNR 30 dB after training at 40);
* another dictionary of the same size (both use its analytic weight; nothing is
  retrained).

It prints NMSE (dB) at the last layer and the best layer for each setting, and the
per-instance variant's gain (fixed minus per-instance at the last layer: > 0 means
per-instance is better), and writes a markdown table and a JSON file.

    python benchmarks/alista_per_instance.py                   # 256 x 512, minutes
    python benchmarks/alista_per_instance.py --quick           # 64 x 128, short stages
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from metaopt import typed_config
from metaopt.amortized import lista
from tasks import sparse

VARIANTS = ("alista", "alista_per_instance")


def settings(m: int, n: int):
  """``{label: problem}``: the training distribution first, then the shifted ones."""
  return {
      "in distribution (p 0.1, SNR 40)": sparse.lasso(m, n, 0.1, 40.0),
      "sparser (p 0.05, SNR 40)": sparse.lasso(m, n, 0.05, 40.0),
      "denser (p 0.2, SNR 40)": sparse.lasso(m, n, 0.2, 40.0),
      "noisier (p 0.1, SNR 30)": sparse.lasso(m, n, 0.1, 30.0),
      "another dictionary (p 0.1, SNR 40)": sparse.lasso(m, n, 0.1, 40.0, dict_seed=1),
  }


def evaluate_on(result: lista.LISTAResult, problem, num: int) -> np.ndarray:
  """NMSE (dB) per layer of ``result`` on ``num`` held-out instances of ``problem``,
  with ``problem``'s own analytic weight."""
  insts = problem.sample_batch(problem.split_key(jax.random.PRNGKey(0), "test"), num)
  return lista.evaluate(problem, result.moved_to(problem), insts)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="64 x 128, 40-step stages")
  ap.add_argument("--layers", type=int, default=16)
  ap.add_argument("--num-test", type=int, default=1000)
  ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                  help="LISTAConfig overrides for both variants")
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--include", nargs="*", default=[],
                  help="JSON files of earlier runs (same size): their rows join the table")
  ap.add_argument("--out", default="alista_per_instance.md")
  args = ap.parse_args(argv)
  from lista_table import config_for  # pylint: disable=import-outside-toplevel

  m, n = (64, 128) if args.quick else (256, 512)
  problems = settings(m, n)
  train_problem = next(iter(problems.values()))
  curves, times = {}, {}
  for path in args.include:
    with open(path) as f:
      saved = json.load(f)
    for v, row in saved["curves"].items():
      curves[v] = {s: np.asarray(c) for s, c in row.items()}
      times[v] = saved["train_s"][v]
  for variant in [v for v in args.variants.split(",") if v]:
    cfg = typed_config.apply_overrides(config_for(variant, args.layers, args.quick),
                                       args.set)
    result = lista.train(train_problem, cfg, callback=lambda s, mt: print(
        f"  {variant} step {s} {mt}", flush=True), log_every=2000)
    times[variant] = result.wall_time
    curves[variant] = {label: evaluate_on(result, pb, args.num_test)
                       for label, pb in problems.items()}
    print(f"{variant}: trained in {result.wall_time:.0f} s; "
          + ", ".join(f"{lb}: {c[-1]:.1f}" for lb, c in curves[variant].items()), flush=True)

  lines = [f"**ALISTA per instance vs fixed scalars**, {m} x {n}, trained on "
           f"{train_problem.name}, {args.layers} layers, {args.num_test} held-out "
           f"instances per setting; NMSE (dB) at the last layer (best layer in "
           f"brackets); backend {jax.default_backend()}", "",
           "| setting | " + " | ".join(lista_label(v) for v in curves)
           + " | gain (dB) |", "|---|" + "---|" * (len(curves) + 1)]
  for label in problems:
    cells = [f"{c[label][-1]:.1f} ({np.min(c[label]):.1f})" for c in curves.values()]
    gain = ""
    if all(v in curves for v in VARIANTS):
      gain = f"{curves['alista'][label][-1] - curves['alista_per_instance'][label][-1]:+.1f}"
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {gain} |")
  lines.append("| train time (s) | " + " | ".join(f"{times[v]:.0f}" for v in curves) + " | |")
  table = "\n".join(lines) + "\n"
  with open(args.out, "w") as f:
    f.write(table)
  with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
    json.dump({"curves": {v: {lb: [float(x) for x in c] for lb, c in row.items()}
                          for v, row in curves.items()}, "train_s": times}, f, indent=1)
  print(table)


def lista_label(variant: str) -> str:
  return {"alista": "ALISTA (fixed scalars)",
          "alista_per_instance": "ALISTA per instance"}.get(variant, variant)


if __name__ == "__main__":
  main()
