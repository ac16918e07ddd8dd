"""``metaopt train``: train a registered task with a baseline optimizer.

Example::

  metaopt train --task quadratic_d10_cond10 --optimizer adam --steps 500 --lr 3e-3 \
      --hparam b1=0.95 --out runs/quad_adam
"""

from __future__ import annotations

import argparse
import sys

from metaopt.runlog import WANDB_MODES


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "train", help="train a task with a hand-designed optimizer",
      description="Train a registered task with a baseline optimizer; writes config.json, "
                  "metrics.jsonl and curve.png to the run directory. Exit status: 0 done, "
                  "1 training diverged (non-finite loss, or a loss over 1000x the initial one), "
                  "2 bad arguments.")
  p.add_argument("--task", required=True, help="task name (see `metaopt list tasks`)")
  p.add_argument("--optimizer", default="adam",
                 help="baseline optimizer (see `metaopt list optimizers`); default adam")
  p.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
  p.add_argument("--lr", type=float, default=None, help="learning rate (default: the "
                 "optimizer's)")
  p.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                 help="other hyper-parameter, repeatable (e.g. --hparam b1=0.95)")
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


def main(args: argparse.Namespace) -> int:
  import tasks  # pylint: disable=import-outside-toplevel
  from metaopt import inner, optimizers  # pylint: disable=import-outside-toplevel
  from metaopt.train import run  # pylint: disable=import-outside-toplevel

  try:
    hparams = optimizers.parse_hparams(args.hparam)
    if args.lr is not None:
      hparams["learning_rate"] = args.lr
    # Validate every name before any work starts (clean errors, no traceback).
    if args.task not in tasks.task_names():
      tasks.get(args.task)  # Raises UnknownNameError with close matches.
    optimizers.config(args.optimizer, **hparams)
    optimizers.make_schedule(1.0, args.schedule, args.steps, args.warmup_steps)
    if args.steps <= 0:
      raise ValueError(f"--steps must be positive, got {args.steps}.")
  except (KeyError, ValueError) as e:
    print(f"metaopt train: error: {e}", file=sys.stderr)
    return 2
  try:
    output = run(args.task, args.optimizer, args.steps, seed=args.seed, hparams=hparams,
                 out=args.out, wandb_mode=args.wandb, eval_every=args.eval_every,
                 schedule=args.schedule, warmup_steps=args.warmup_steps,
                 progress=not args.no_progress)
  except ValueError as e:  # e.g. a schedule on a schedule-free optimizer.
    print(f"metaopt train: error: {e}", file=sys.stderr)
    return 2
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
