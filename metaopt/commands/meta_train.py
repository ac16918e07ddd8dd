"""``metaopt meta-train CONFIG [--set key=value ...]``: meta-train a learned optimizer.

CONFIG is a shipped config's name (``metaopt meta-train general_v2``,
``mlp_digits:pod``) or a config file (``configs/mlp_digits.py:pod``).

Re-running the same command resumes from the run directory's latest checkpoint.
Multi-host: start the same command on every host with ``--distributed`` (JAX reads the
coordinator address, process count and id from the environment or the flags).
"""

from __future__ import annotations

import json
import sys


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "meta-train", help="meta-train a learned optimizer from a config file",
      description=__doc__.split("\n\n", 1)[1] if "\n\n" in __doc__ else None)
  p.add_argument("config", help="a shipped config's name (general_v2, mlp_digits:pod; "
                 "variant after the colon) or a config file (executed Python: trusted files "
                 "only), e.g. configs/mlp_digits.py:pod")
  p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                 metavar="KEY=VALUE",
                 help="override a config field (repeatable), e.g. --set outer.num_steps=200 "
                 "--set estimator.sigma=0.02; give the config before --set")
  p.add_argument("--print-config", action="store_true", help="print the config and exit")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--wandb", choices=("offline", "online", "disabled"), default=None,
                 help="wandb mode (sets run.wandb_mode; default: the config's, offline)")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first (multi-host jobs)")
  p.add_argument("--coordinator", default=None, help="coordinator host:port (multi-host)")
  p.add_argument("--num-processes", type=int, default=None)
  p.add_argument("--process-id", type=int, default=None)
  p.set_defaults(func=run)


def run(args) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  if args.distributed:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  from metaopt.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from metaopt.runlock import RunLockError  # pylint: disable=import-outside-toplevel
  from metaopt.meta import config as config_lib  # pylint: disable=import-outside-toplevel
  from metaopt.meta import trainer  # pylint: disable=import-outside-toplevel
  try:
    wandb = [f"run.wandb_mode={args.wandb}"] if getattr(args, "wandb", None) else []
    cfg = config_lib.load_config(args.config, list(args.overrides) + wandb)
    if args.print_config:
      print(json.dumps(cfg.to_dict(), indent=2))
      return 0
    result = trainer.meta_train(cfg, progress=not args.no_progress)
  except (ValueError, KeyError, FileNotFoundError, CheckpointError, RunLockError,
          trainer.RunDirError) as e:
    # Bad config, unknown names, mismatched checkpoint, run dir in use: the message says
    # what to fix.
    print(f"metaopt meta-train: error: {e}", file=sys.stderr)
    return 2
  except trainer.MetaTrainingDiverged as e:
    print(f"metaopt meta-train: error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    last = next((r for r in reversed(result.rows) if "meta_loss" in r), {})
    status = "interrupted (checkpoint saved; re-run to resume)" if result.interrupted else "done"
    print(f"{status}: step {result.step}, meta_loss {last.get('meta_loss', float('nan')):.4g}")
    if result.export_path:
      print(f"theta exported to {result.export_path}")
  return 130 if result.interrupted else 0
