"""ALISTA's 2K scalars moved to a new dictionary, against ALISTA retrained on it.

ALISTA learns only a step and a threshold per layer; its weight is computed in closed
form from the dictionary (``lista.alista_weight``). This script trains ALISTA on the
source dictionary (its default recipe, ``lista.RECIPES``), then, for each target
dictionary (new Gaussian draws and ill-conditioned ones), evaluates on held-out
instances of the target problem

* ``transferred``: the source scalars with the target's analytic weight (no training);
* ``retrained``: ALISTA trained from scratch on the target problem, same settings;

and prints NMSE (dB) per layer for both, their difference at the last layer and the
training wall time (transfer costs one closed-form solve).

  python benchmarks/alista_transfer.py                    # 250 x 500 noiseless
  python benchmarks/alista_transfer.py --quick            # 64 x 128, short stages
  python benchmarks/alista_transfer.py --targets seed1,cond50 --out /tmp/t.md
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from metaopt.amortized import lista
from tasks import sparse

TARGETS = {
    "seed1": dict(dict_seed=1), "seed2": dict(dict_seed=2),
    "cond5": dict(cond=5.0), "cond50": dict(cond=50.0),
}
LABELS = {"seed1": "new Gaussian, seed 1", "seed2": "new Gaussian, seed 2",
          "cond5": "seed 0, cond 5", "cond50": "seed 0, cond 50"}


def held_out(problem, num):
  return problem.sample_batch(problem.split_key(jax.random.PRNGKey(0), "test"), num)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="64 x 128, 40-step stages")
  ap.add_argument("--targets", default="seed1,seed2,cond5,cond50",
                  help=f"comma-separated subset of {sorted(TARGETS)}")
  ap.add_argument("--layers", type=int, default=16)
  ap.add_argument("--stage-steps", type=int, default=None)
  ap.add_argument("--num-test", type=int, default=1000)
  ap.add_argument("--out", default="alista_transfer.md")
  args = ap.parse_args(argv)
  unknown = set(args.targets.split(",")) - set(TARGETS)
  if unknown:
    raise SystemExit(f"Unknown targets {sorted(unknown)}; known: {sorted(TARGETS)}.")

  m, n = (64, 128) if args.quick else (250, 500)
  make = lambda **kw: sparse.lasso(m, n, 0.1, np.inf, **kw)
  from lista_table import config_for  # pylint: disable=import-outside-toplevel
  config = config_for("alista", args.layers, args.quick, stage_steps=args.stage_steps)
  kw = {f: getattr(config.resolved(), f) for f in lista.RECIPES["alista"]}
  log = lambda tag: (lambda s, mt: print(f"  {tag} step {s} {mt}", flush=True))

  source = make()
  trained = lista.train(source, config, callback=log("source"), log_every=2000)
  source_db = lista.evaluate(source, trained, held_out(source, args.num_test))
  print(f"source: {source_db[-1]:.1f} dB, {trained.wall_time:.0f} s", flush=True)
  rows = {"source": (source_db, None, trained.wall_time)}
  for name in args.targets.split(","):
    target = make(**TARGETS[name])
    insts = held_out(target, args.num_test)
    t0 = time.perf_counter()
    moved = trained.moved_to(target)
    moved_db = lista.evaluate(target, moved, insts)
    transfer_s = time.perf_counter() - t0
    retrained = lista.train(target, config, callback=log(name), log_every=2000)
    rows[name] = (moved_db, lista.evaluate(target, retrained, insts), retrained.wall_time)
    print(f"{name}: transferred {moved_db[-1]:.1f} dB ({transfer_s:.1f} s), retrained "
          f"{rows[name][1][-1]:.1f} dB ({retrained.wall_time:.0f} s)", flush=True)

  k = args.layers
  cols = sorted({1, 4, 8, 12, k} & set(range(1, k + 1)))
  head = " | ".join(f"k={c}" for c in cols)
  lines = [f"**ALISTA transfer vs retraining**, {m} x {n} noiseless, {args.num_test} "
           f"held-out instances of each target, stage-wise ({kw}), backend "
           f"{jax.default_backend()}", "",
           f"| dictionary | scalars | {head} | train time (s) |",
           "|---|---|" + "---|" * (len(cols) + 1)]
  src, _, src_s = rows.pop("source")
  lines.append("| trained on (seed 0) | trained | "
               + " | ".join(f"{src[c]:.1f}" for c in cols) + f" | {src_s:.0f} |")
  for name, (moved_db, retrained_db, secs) in rows.items():
    for label, curve, t in (("transferred", moved_db, "0"),
                            ("retrained", retrained_db, f"{secs:.0f}")):
      lines.append(f"| {LABELS[name]} | {label} | "
                   + " | ".join(f"{curve[c]:.1f}" for c in cols) + f" | {t} |")
  gaps = {name: float(r[0][-1] - r[1][-1]) for name, r in rows.items()}
  lines += ["", "Transferred minus retrained at k = "
            f"{k} (dB; > 0: retraining is better): "
            + ", ".join(f"{LABELS[nm]} {g:+.1f}" for nm, g in gaps.items())]
  table = "\n".join(lines) + "\n"
  with open(args.out, "w") as f:
    f.write(table)
  with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
    json.dump({"source": [float(x) for x in src], "source_train_s": src_s,
               "targets": {nm: {"transferred": [float(x) for x in r[0]],
                                "retrained": [float(x) for x in r[1]],
                                "retrain_s": r[2]} for nm, r in rows.items()}}, f,
              indent=1)
  print(table)


if __name__ == "__main__":
  main()
