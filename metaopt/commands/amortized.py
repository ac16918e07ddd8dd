"""``metaopt amortized train|eval``: learned solvers for problem families.

    metaopt amortized train --config amortized_lista --out runs/lista
    metaopt amortized train --method alista --problem lasso_m64_n128_p0.1_snr40 \\
        --set train.steps=1000 --out runs/alista
    metaopt amortized eval --run runs/lista

``--config NAME|FILE[:variant]`` is a shipped config's name or a Python file defining
``get_config(variant=...)`` returning an ``ExperimentConfig`` (executed: trusted files
only); repeatable ``--set key=value`` overrides its fields with the same typed
machinery as ``metaopt meta-train`` (a key given twice with different values fails).
``train`` trains, saves ``experiment.json`` + ``result.json`` + ``result.npz`` +
``metrics.jsonl`` to ``--out`` and (unless ``--no-eval``) evaluates; ``eval``
evaluates a saved run (JSON and arrays only: no pickle, no code). The evaluation
writes ``results.md`` (a markdown table) and ``curves.png`` to the run directory and
prints the table.
"""

from __future__ import annotations

import json
import os
import sys

from metaopt import typed_config
from metaopt.amortized import experiment


def _fail(command: str, e: Exception) -> int:
  """Bad arguments (unknown file, key, wrongly typed value): one line, exit status 2."""
  print(f"metaopt amortized {command}: error: {e}", file=sys.stderr)
  return 2


def _config(args) -> experiment.ExperimentConfig:
  overrides = [f"method={args.method}"] if args.method else []
  overrides += [f"problem={args.problem}"] if args.problem else []
  overrides += list(args.set or [])
  if args.config:
    return experiment.load_config(args.config, overrides)
  if not (args.method and args.problem):
    raise ValueError("Give --method and --problem (or a --config file). "
                     f"Methods: {', '.join(experiment.METHODS)}.")
  return typed_config.apply_overrides(experiment.ExperimentConfig(), overrides)


def _report(config, result, run_dir, seed):
  report = experiment.evaluate(config, result, seed=seed)
  md = experiment.table(report)
  title = f"{config.method} on {config.problem} (held-out instances)"
  png = experiment.plot(report, os.path.join(run_dir, "curves.png"), title)
  with open(os.path.join(run_dir, "results.md"), "w") as f:
    f.write(f"## {title}\n\n{md}\n")
  with open(os.path.join(run_dir, "curves.json"), "w") as f:
    json.dump({k: v.tolist() for k, v in report["curves"].items()}, f)
  print(md)
  print(f"wrote {png} and {os.path.join(run_dir, 'results.md')}")


def _train(args):
  from metaopt.runlog import MetricsLogger  # pylint: disable=import-outside-toplevel
  try:  # Fail on a bad method, problem or key before any work, without a traceback.
    config = _config(args)
  except (ValueError, KeyError, FileNotFoundError) as e:
    return _fail("train", e)
  try:
    logger = MetricsLogger(args.out, config=config.to_dict(), mode=args.wandb,
                           name=f"amortized-{config.method}")
  except ValueError as e:  # --out is an existing file.
    return _fail("train", e)
  result = experiment.train(config, callback=logger.log,
                            run_dir=os.path.join(args.out, "meta_train"))
  logger.close()
  experiment.save(args.out, config, result)
  print(f"trained {config.method} on {config.problem} in {result.wall_time:.1f}s; "
        f"saved to {args.out}")
  if not args.no_eval:
    try:
      _report(config, result, args.out, args.seed)
    except experiment.RunFileError as e:  # e.g. a training that diverged: NaN weights.
      return _fail("train", e)
  return 0


def _eval(args):
  try:
    config, result = experiment.load(args.run)
    experiment.check_learned(config, result, os.path.join(args.run, "result.npz"))
    config = typed_config.apply_overrides(
        config, [s if s.startswith("eval.") or "=" not in s else f"eval.{s}"
                 for s in args.set or []])
  except (FileNotFoundError, ValueError, KeyError) as e:
    return _fail("eval", e)
  _report(config, result, args.run, args.seed)
  return 0


def add_parser(subparsers):
  parser = subparsers.add_parser(
      "amortized", help="train/evaluate amortized solvers and unrolled L2O (LISTA, ...)",
      description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="amortized_command", metavar="{train,eval}")
  sub.required = True
  tr = sub.add_parser("train", help="train a learned solver, then evaluate it")
  tr.add_argument("--config", help="a shipped config's name (amortized_lista[:variant]) or "
                  "a file such as configs/amortized_lista.py defining get_config() (executed "
                  "Python: trusted files only)")
  tr.add_argument("--method", choices=experiment.METHODS)
  tr.add_argument("--problem", help="problem family name (tasks.problems.problem_names())")
  tr.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                  help="override a config field (repeatable), e.g. --set train.steps=500 "
                  "--set eval.num_test=512")
  tr.add_argument("--out", required=True, help="run directory")
  tr.add_argument("--seed", type=int, default=0, help="seed of the held-out instances")
  tr.add_argument("--no-eval", action="store_true")
  tr.add_argument("--wandb", default="offline", choices=("offline", "online", "disabled"))
  tr.set_defaults(func=_train)
  ev = sub.add_parser("eval", help="evaluate a saved run: table + PNG")
  ev.add_argument("--run", required=True, help="run directory written by train")
  ev.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                  help="override an evaluation field (eval.*; repeatable), e.g. --set "
                  "eval.num_test=512 --set eval.iters=100")
  ev.add_argument("--seed", type=int, default=0)
  ev.set_defaults(func=_eval)
