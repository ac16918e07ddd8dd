"""Ships a meta-training run as a named optimizer in ``metaopt/pretrained/`` (maintainers).

  python scripts/ship_pretrained.py RUN_DIR NAME --description "..." [--which best|final]
      [--license Apache-2.0] [--command "metaopt meta-train ..."]

Copies the run's exported theta (``<run.name>.best.safetensors`` with ``--which best``,
the default, else ``<run.name>.safetensors``) to ``metaopt/pretrained/NAME.safetensors``
with the model-card metadata added to its header (description, licence, command,
``checkpoint_sha256``: a SHA-256 over the files of the run's newest checkpoint), and its
``metrics.jsonl`` beside it as ``NAME.metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metaopt.lopt import io  # noqa: E402

PRETRAINED = pathlib.Path(__file__).resolve().parent.parent / "metaopt" / "pretrained"


def checkpoint_sha256(run_dir: pathlib.Path) -> str:
  """SHA-256 over (relative path, bytes) of every file of the newest step directory."""
  steps = sorted((p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()),
                 key=lambda p: int(p.name))
  if not steps:
    raise SystemExit(f"{run_dir}/checkpoints holds no checkpoint")
  h = hashlib.sha256()
  for f in sorted(p for p in steps[-1].rglob("*") if p.is_file()):
    h.update(str(f.relative_to(steps[-1])).encode())
    h.update(f.read_bytes())
  return f"step {steps[-1].name}: {h.hexdigest()}"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("run_dir")
  p.add_argument("name")
  p.add_argument("--description", required=True)
  p.add_argument("--which", choices=("best", "final"), default="best")
  p.add_argument("--license", default="Apache-2.0")
  p.add_argument("--command", default=None, help="the command that reproduces the run")
  args = p.parse_args(argv)
  run_dir = pathlib.Path(args.run_dir)
  config = json.loads((run_dir / "config.json").read_text())
  run_name = config["run"]["name"]
  src = run_dir / f"{run_name}{'.best' if args.which == 'best' else ''}.safetensors"
  lopt, theta, meta = io.load_meta_params(str(src))
  meta.update(description=args.description, license=args.license,
              command=args.command or f"metaopt meta-train <config> --set run.name={run_name}",
              checkpoint_sha256=checkpoint_sha256(run_dir),
              metrics_log=f"{args.name}.metrics.jsonl", shipped_from=args.which)
  out = io.save(PRETRAINED / f"{args.name}.safetensors", lopt, theta, meta)
  shutil.copyfile(run_dir / "metrics.jsonl", PRETRAINED / f"{args.name}.metrics.jsonl")
  print(f"wrote {out} (selected at step {meta.get('selected_at_step', 'final')}) and "
        f"{args.name}.metrics.jsonl")


if __name__ == "__main__":
  main()
