"""Runs a tiny meta-training (test quadratic family, lr/momentum optimizer) in a fresh
process, for the device-count, kill/resume and multi-process tests.

  python -m tests.meta._meta_script RUN_DIR [--devices N] [--kill_after K]
      [--num_steps S] [--process_id I --num_processes P --port PORT]

Prints one JSON line ``{"theta": {...}, "step": s}`` at the end.
"""

import argparse
import json
import os
import sys


def config(run_dir, num_steps=12, **overrides):
  from metaopt.meta.config import MetaTrainConfig  # pylint: disable=import-outside-toplevel
  values = dict(name="tiny", family="test_quadratic", lopt="test_lr_momentum", estimator="pes",
                num_tasks=8, truncation_length=4, horizon=10, sigma=0.05, num_steps=num_steps,
                outer_optimizer="sgd", outer_lr=0.3, grad_clip="none", log_every=2,
                checkpoint_every=4, eval_every=6, eval_tasks=2, eval_horizon=10,
                run_dir=run_dir, wandb_mode="disabled")
  values.update(overrides)
  return MetaTrainConfig(**values)


def objects():
  from tests.meta.helpers import LrMomentum, quadratic_family  # pylint: disable=import-outside-toplevel
  return dict(family=quadratic_family(fixed=False), lopt=LrMomentum())


def main():
  p = argparse.ArgumentParser()
  p.add_argument("run_dir")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--kill_after", type=int, default=0)
  p.add_argument("--num_steps", type=int, default=12)
  p.add_argument("--process_id", type=int, default=None)
  p.add_argument("--num_processes", type=int, default=None)
  p.add_argument("--port", type=int, default=None)
  args = p.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("WANDB_MODE", "disabled")
  import jax  # pylint: disable=import-outside-toplevel
  if args.num_processes:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id)
  from metaopt.meta import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  trainer = trainer_lib.MetaTrainer(config(args.run_dir, args.num_steps), **objects())
  if args.kill_after:
    step, calls = trainer.step, [0]

    def step_then_maybe_die(state, data):
      calls[0] += 1
      if calls[0] > args.kill_after:
        os.kill(os.getpid(), 9)
      return step(state, data)

    trainer.step = step_then_maybe_die
  result = trainer.run(progress=False)
  if jax.process_index() == 0:
    theta = {k: float(v) for k, v in result.theta.items()}
    print(json.dumps({"theta": theta, "step": result.step, "devices": jax.device_count()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
