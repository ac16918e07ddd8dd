"""``metaopt meta-train`` on the tiny test config, in a fresh process (the test family
and architecture registered first), for the run-directory lock and resume tests.

  python -m tests.reliability._meta_cli_job RUN_DIR [--seed S] [--num_steps N]
      [--wait_for FILE] [--set KEY=VALUE ...]

``--wait_for``: after compiling, wait until FILE exists (the job then holds its run
directory's lock for as long as the test wants). Exits with the CLI's status.
"""

import argparse
import os
import sys
import tempfile
import time


def main():
  p = argparse.ArgumentParser()
  p.add_argument("run_dir")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--num_steps", type=int, default=8)
  p.add_argument("--wait_for", default=None)
  p.add_argument("--set", dest="overrides", action="append", default=[])
  args = p.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("WANDB_MODE", "disabled")
  from metaopt import cli  # pylint: disable=import-outside-toplevel
  from metaopt.meta import trainer  # pylint: disable=import-outside-toplevel
  from tests.meta.helpers import registered_test_names  # pylint: disable=import-outside-toplevel
  if args.wait_for:
    compile_step = trainer.MetaTrainer.compile_step

    def compile_then_wait(self, state):
      step = compile_step(self, state)
      while not os.path.exists(args.wait_for):
        time.sleep(0.05)
      return step

    trainer.MetaTrainer.compile_step = compile_then_wait
  with tempfile.TemporaryDirectory() as tmp:
    config = os.path.join(tmp, "tiny.py")
    with open(config, "w") as f:
      f.write("from tests.meta import _meta_script\n\n\n"
              "def get_config(variant=None):\n"
              f"  return _meta_script.config({args.run_dir!r}, {args.num_steps}, "
              f"seed={args.seed})\n")
    with registered_test_names():
      sets = [a for s in args.overrides for a in ("--set", s)]
      return cli.main(["meta-train", config, "--no-progress", *sets])


if __name__ == "__main__":
  sys.exit(main())
