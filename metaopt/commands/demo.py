"""``metaopt demo``: the whole story on embedded defaults, sized for a laptop CPU.

1. meta-train the per-parameter MLP learned optimizer (``configs/mlp_digits.py``,
   ``demo`` variant) on the MLP-on-digits family with PES, exporting θ;
2. evaluate it on the ``demo`` leaderboard suite (three classifiers on data it never
   saw, scored by the same protocol as leaderboard v3) beside the recommended shipped
   learned optimizer, tuned NAdamW and Adam, and Prodigy;
3. print the leaderboard table and write the report (HTML page, plots, tables).

Everything lands in ``--out`` (default ``runs/demo``); re-running resumes: the
meta-training restarts from its checkpoint and stored leaderboard runs are skipped.
"""

from __future__ import annotations

import os
import time

#: The demo's other entrants: tuned baselines, a self-tuning peer and the recommended
#: shipped learned optimizer.
DEMO_ENTRANTS = ("nadamw", "adam", "prodigy", "lopt:general-v2")


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "demo", help="meta-train a small learned optimizer, then evaluate it on a leaderboard",
      description=__doc__.split("\n\n", 1)[1])
  p.add_argument("--out", default="runs/demo", help="output folder")
  p.add_argument("--config", default=None,
                 help="meta-training config (default: the shipped mlp_digits:demo)")
  p.add_argument("--suite", default="demo", help="leaderboard suite")
  p.add_argument("--meta-steps", type=int, default=None, help="override outer.num_steps")
  p.add_argument("--no-progress", action="store_true")
  p.set_defaults(func=run)


def default_config_path() -> str:
  """The shipped ``mlp_digits`` config's ``demo`` variant, by name (works from a wheel)."""
  return "mlp_digits:demo"


def run(args) -> int:
  from metaopt import eval as leaderboard  # pylint: disable=import-outside-toplevel
  from metaopt.meta import load_config, meta_train  # pylint: disable=import-outside-toplevel

  t0 = time.time()
  overrides = [f"run.run_dir={os.path.join(args.out, 'meta_train')}"]
  if args.meta_steps is not None:
    overrides.append(f"outer.num_steps={args.meta_steps}")
  config = load_config(args.config or default_config_path(), overrides)
  print(f"[1/3] meta-training {config.lopt!r} on {config.family!r} "
        f"({config.outer.num_steps} outer steps, {config.estimator.name})")
  result = meta_train(config, progress=not args.no_progress)
  if result.interrupted:
    print("interrupted: re-run the same command to resume")
    return 130
  print(f"      exported {result.export_path} ({time.time() - t0:.0f}s so far)")

  db = os.path.join(args.out, "leaderboard.db")
  entrants = list(DEMO_ENTRANTS) + [result.export_path]
  print(f"[2/3] leaderboard suite {args.suite!r}: {', '.join(entrants)}")
  leaderboard.run_leaderboard(args.suite, entrants, db_path=db, progress=not args.no_progress)

  print("[3/3] report")
  suite = leaderboard.suites.load(args.suite)
  with leaderboard.ResultsDB(db) as store:
    print(leaderboard.format_table(leaderboard.compute(store, suite)))
  page = leaderboard.write_report(db, suite, os.path.join(args.out, "report"),
                                  command="metaopt demo")
  print(f"HTML leaderboard: {os.path.abspath(page)}")
  print(f"meta-training curves: {os.path.join(config.run.run_dir, 'meta_loss.png')}")
  print(f"done in {time.time() - t0:.0f}s")
  return 0
