"""``metaopt amortized train|eval``: learned solvers for problem families.

    metaopt amortized train --config configs/amortized_lista.py --out runs/lista
    metaopt amortized train --method alista --problem lasso_m64_n128_p0.1_snr40 \\
        --set steps=1000 --out runs/alista
    metaopt amortized eval --run runs/lista

``train`` trains, saves ``experiment.json`` + ``result.pkl`` + ``metrics.jsonl`` to
``--out`` and (unless ``--no-eval``) evaluates; ``eval`` evaluates a saved run. The
evaluation writes ``results.md`` (a markdown table) and ``curves.png`` to the run
directory and prints the table.
"""

from __future__ import annotations

import ast
import json
import os

from metaopt.amortized import experiment


def _parse_set(items):
  out = {}
  for item in items or []:
    if "=" not in item:
      raise SystemExit(f"--set expects key=value, got {item!r}.")
    key, value = item.split("=", 1)
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value  # Plain strings need no quotes.
  return out


def _config(args):
  config = experiment.load_config_file(args.config) if args.config else {}
  if args.method:
    config["method"] = args.method
  if args.problem:
    config["problem"] = args.problem
  config.update(_parse_set(args.set))
  if "method" not in config or "problem" not in config:
    raise SystemExit("Give --method and --problem (or a --config file defining them). "
                     f"Methods: {', '.join(experiment.METHODS)}.")
  return config


def _report(config, result, run_dir, seed):
  report = experiment.evaluate(config, result, seed=seed)
  md = experiment.table(report)
  title = f"{config['method']} on {config['problem']} (held-out instances)"
  png = experiment.plot(report, os.path.join(run_dir, "curves.png"), title)
  with open(os.path.join(run_dir, "results.md"), "w") as f:
    f.write(f"## {title}\n\n{md}\n")
  with open(os.path.join(run_dir, "curves.json"), "w") as f:
    json.dump({k: v.tolist() for k, v in report["curves"].items()}, f)
  print(md)
  print(f"wrote {png} and {os.path.join(run_dir, 'results.md')}")


def _train(args):
  from metaopt.logging import MetricsLogger  # pylint: disable=import-outside-toplevel
  config = _config(args)
  try:  # Fail on a bad method, problem or key before any work, without a traceback.
    experiment.validate(config)
  except (ValueError, KeyError) as e:
    raise SystemExit(f"metaopt amortized train: {e}") from None
  logger = MetricsLogger(args.out, config=config, mode=args.wandb,
                         name=f"amortized-{config['method']}")
  result = experiment.train(config, callback=logger.log)
  logger.close()
  experiment.save(args.out, config, result)
  print(f"trained {config['method']} on {config['problem']} in {result.wall_time:.1f}s; "
        f"saved to {args.out}")
  if not args.no_eval:
    _report(config, result, args.out, args.seed)
  return 0


def _eval(args):
  try:
    config, result = experiment.load(args.run)
  except FileNotFoundError as e:
    raise SystemExit(f"metaopt amortized eval: {e}") from None
  config.update(_parse_set(args.set))
  _report(config, result, args.run, args.seed)
  return 0


def add_parser(subparsers):
  parser = subparsers.add_parser(
      "amortized", help="train/evaluate amortized solvers and unrolled L2O (LISTA, ...)",
      description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="amortized_command", metavar="{train,eval}")
  sub.required = True
  tr = sub.add_parser("train", help="train a learned solver, then evaluate it")
  tr.add_argument("--config", help="configs/amortized_*.py defining CONFIG (a dict)")
  tr.add_argument("--method", choices=experiment.METHODS)
  tr.add_argument("--problem", help="problem family name (tasks.problems.problem_names())")
  tr.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                  help="override config fields, e.g. steps=500 num_layers=16")
  tr.add_argument("--out", required=True, help="run directory")
  tr.add_argument("--seed", type=int, default=0, help="seed of the held-out instances")
  tr.add_argument("--no-eval", action="store_true")
  tr.add_argument("--wandb", default="offline", choices=("offline", "online", "disabled"))
  tr.set_defaults(func=_train)
  ev = sub.add_parser("eval", help="evaluate a saved run: table + PNG")
  ev.add_argument("--run", required=True, help="run directory written by train")
  ev.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                  help="override evaluation fields, e.g. num_test=512 eval_iters=100")
  ev.add_argument("--seed", type=int, default=0)
  ev.set_defaults(func=_eval)
