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
  """The tiny config; ``overrides``: dotted keys (``estimator.sigma``) or nested dicts.
  Needs ``helpers.registered_test_names()`` active."""
  from metaopt.meta import config as config_lib  # pylint: disable=import-outside-toplevel
  values = {"family": "test_quadratic", "lopt": "test_lr_momentum", "estimator.name": "pes",
            "estimator.num_tasks": 8, "schedule.truncation_length": 4, "schedule.horizon": 10,
            "estimator.sigma": 0.05, "outer.num_steps": num_steps, "outer.optimizer": "sgd",
            "outer.lr": 0.3, "outer.grad_clip": "none", "run.name": "tiny", "run.log_every": 2,
            "run.checkpoint_every": 4, "eval.every": 6, "eval.tasks": 2, "eval.horizon": 10,
            "run.run_dir": run_dir, "run.wandb_mode": "disabled"}
  values.update(overrides)
  return config_lib.from_dict(values)


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
  from tests.meta.helpers import registered_test_names  # pylint: disable=import-outside-toplevel
  with registered_test_names():
    cfg = config(args.run_dir, args.num_steps)
  trainer = trainer_lib.MetaTrainer(cfg, **objects())
  if args.kill_after:
    compile_step, calls = trainer.compile_step, [0]

    def compile_then_maybe_die(state):
      step = compile_step(state)

      def step_then_maybe_die(state, data):
        calls[0] += 1
        if calls[0] > args.kill_after:
          os.kill(os.getpid(), 9)
        return step(state, data)

      return step_then_maybe_die

    trainer.compile_step = compile_then_maybe_die
  result = trainer.run(progress=False)
  if jax.process_index() == 0:
    theta = {k: float(v) for k, v in result.theta.items()}
    print(json.dumps({"theta": theta, "step": result.step, "devices": jax.device_count()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
