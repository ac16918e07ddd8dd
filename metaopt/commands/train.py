"""``metaopt train``: train a registered task with a baseline or a learned optimizer.

Examples::

  metaopt train --task quadratic_d10_cond10 --optimizer adam --steps 500 --lr 3e-3 \
      --set b1=0.95 --out runs/quad_adam
  metaopt train --task mlp_digits_w32_d2 --optimizer general-v2 --steps 500
  metaopt train --task mlp_digits_w32_d2 --optimizer runs/x/meta_train/x.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys

from metaopt import pretrained, typed_config
from metaopt.runlog import WANDB_MODES


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "train", help="train a task with a baseline or a learned optimizer",
      description="Train a registered task with a baseline optimizer, a shipped learned "
                  "optimizer (`metaopt list pretrained`) or a .safetensors file; writes "
                  "config.json, "
                  "metrics.jsonl and curve.png to the run directory. Exit status: 0 done, "
                  "1 training diverged (non-finite loss, or a loss over 1000x the initial one), "
                  "2 bad arguments.")
  p.add_argument("--task", required=True, help="task name (see `metaopt list tasks`)")
  p.add_argument("--optimizer", default="adam",
                 help="baseline (`metaopt list optimizers`), shipped learned optimizer "
                 "(`metaopt list pretrained`, e.g. general-v2) or a .safetensors path; "
                 "default adam")
  p.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
  p.add_argument("--lr", type=float, default=None, help="learning rate (default: the "
                 "optimizer's)")
  p.add_argument("--set", "--hparam", dest="hparam", action="extend", nargs="+", default=[],
                 metavar="NAME=VALUE", help="a baseline's hyper-parameter, repeatable (e.g. "
                 "--set b1=0.95); --hparam is the same flag")
  p.add_argument("--schedule", default="constant",
                 help="learning-rate schedule: constant | cosine | warmup_cosine")
  p.add_argument("--warmup-steps", type=int, default=None,
                 help="warm-up steps for warmup_cosine (default 5%% of --steps)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--eval-every", type=int, default=None,
                 help="steps between validation losses (default steps/50)")
  p.add_argument("--out", default=None,
                 help="run directory (default runs/<task>__<optimizer>__seed<seed>)")
  p.add_argument("--wandb", default="offline", choices=WANDB_MODES,
                 help="wandb mode (default offline; WANDB_MODE overrides)")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.set_defaults(func=main)


def learned_source(name: str, baselines) -> "str | None":
  """``None`` for a baseline name, else the shipped name or ``.safetensors`` path of a
  learned optimizer; anything else fails listing close matches of both kinds."""
  from metaopt.lopt import io  # pylint: disable=import-outside-toplevel
  from tasks.registry import unknown_name_message  # pylint: disable=import-outside-toplevel
  if name in baselines:
    return None
  if name in pretrained.names() or io.is_path(name):  # Bare names are shipped names only.
    return name
  known = list(baselines) + pretrained.names()
  local = (f" A local {name!r} exists: pass it as a path, ./{name}."
           if os.path.exists(name) else "")
  raise ValueError(f"{unknown_name_message('optimizer', name, known)} (baselines: `metaopt "
                   "list optimizers`; learned: `metaopt list pretrained`, or a .safetensors "
                   f"path).{local}")


def _run_learned(args, source: str):
  """A learned optimizer's run: the same run directory as a baseline's (config.json,
  metrics.jsonl, curve.png), θ loaded once, the horizon set to ``--steps``."""
  import jax  # pylint: disable=import-outside-toplevel
  import tasks  # pylint: disable=import-outside-toplevel
  from metaopt.lopt import io  # pylint: disable=import-outside-toplevel
  from metaopt.runlog import MetricsLogger, plot_curves, read_metrics  # pylint: disable=import-outside-toplevel
  from metaopt.train import RunRecord, train  # pylint: disable=import-outside-toplevel

  task = tasks.get(args.task)
  lopt, theta, metadata = io.load_meta_params(source)
  info = None
  if task.param_info is not None:  # μP architectures need the layer contract.
    info = task.param_info(jax.eval_shape(task.init, jax.random.PRNGKey(args.seed)))
  opt = lopt.transform(theta, num_steps=args.steps, param_info=info)
  label = os.path.splitext(os.path.basename(source))[0]
  eval_every = args.eval_every or max(1, args.steps // 50)
  run_dir = args.out or os.path.join("runs", f"{args.task}__{label}__seed{args.seed}")
  config = {"task": args.task, "optimizer": source, "kind": "learned", "arch": lopt.arch,
            "trained_on": metadata.get("trained_on"), "steps": args.steps,
            "seed": args.seed, "eval_every": eval_every, "eval_batches": 4}
  logger = MetricsLogger(run_dir, config=config, mode=args.wandb,
                         name=os.path.basename(os.path.normpath(run_dir)))
  try:
    result = train(task, opt, args.steps, seed=args.seed, eval_every=eval_every,
                   eval_batches=4, progress=not args.no_progress, callback=logger.log)
  finally:
    logger.close()
  plot = plot_curves(read_metrics(logger.path), ["train_loss", "valid_loss"],
                     os.path.join(run_dir, "curve.png"),
                     title=f"{args.task} / {label} (seed {args.seed})")
  return RunRecord(result, config, run_dir, logger.path, plot)


def main(args: argparse.Namespace) -> int:
  import tasks  # pylint: disable=import-outside-toplevel
  from metaopt import inner, optimizers  # pylint: disable=import-outside-toplevel
  from metaopt.train import run  # pylint: disable=import-outside-toplevel

  try:
    typed_config.parse_overrides(args.hparam)  # Conflicts and `--set k v` fail here.
    hparams = optimizers.parse_hparams(args.hparam)
    if args.lr is not None:
      hparams["learning_rate"] = args.lr
    # Validate every name before any work starts (clean errors, no traceback).
    if args.task not in tasks.task_names():
      tasks.get(args.task)  # Raises UnknownNameError with close matches.
    source = learned_source(args.optimizer, optimizers.names())
    if source is not None:
      given = [f for f, bad in (("--lr/--set", hparams),
                                ("--schedule", args.schedule != "constant"),
                                ("--warmup-steps", args.warmup_steps is not None)) if bad]
      if given:
        raise ValueError(f"{', '.join(given)} apply to baselines; the learned optimizer "
                         f"{args.optimizer!r} has no learning rate or schedule to set.")
    else:
      optimizers.config(args.optimizer, **hparams)
      optimizers.make_schedule(1.0, args.schedule, args.steps, args.warmup_steps)
    if args.steps <= 0:
      raise ValueError(f"--steps must be positive, got {args.steps}.")
  except (KeyError, ValueError) as e:
    print(f"metaopt train: error: {e}", file=sys.stderr)
    return 2
  try:
    if source is not None:
      output = _run_learned(args, source)
    else:
      output = run(args.task, args.optimizer, args.steps, seed=args.seed, hparams=hparams,
                   out=args.out, wandb_mode=args.wandb, eval_every=args.eval_every,
                   schedule=args.schedule, warmup_steps=args.warmup_steps,
                   progress=not args.no_progress)
  except (ValueError, FileNotFoundError) as e:  # e.g. a schedule on a schedule-free
    # optimizer; a learned-optimizer file that is corrupt, newer or missing.
    print(f"metaopt train: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("metaopt train: interrupted (the metrics logged so far are in the run directory).",
          file=sys.stderr)
    return 130
  res = output.result
  status = " (DIVERGED)" if res.diverged else ""
  print(f"{args.task} / {args.optimizer}: {args.steps} steps in {res.wall_time:.2f}s{status}")
  print(f"final train loss: {res.final_train_loss:.6g}")
  print(f"final valid loss: {res.final_valid_loss:.6g}")
  print(f"run dir: {output.run_dir}")
  print(f"metrics: {output.metrics_path}")
  print(f"curve:   {output.plot_path}")
  if res.diverged:
    at = res.diverged_at
    last = float(res.train_loss[at - 1]) if at > 0 else float("nan")
    print(f"metaopt train: training diverged at step {at} (non-finite loss, or more than "
          f"{inner.DEFAULT_BLOWUP_FACTOR:g}x the initial loss {res.train_loss[0]:.4g}; "
          f"last good loss {last:.4g}); try a smaller --lr.", file=sys.stderr)
    return 1
  return 0
