"""Meta-training throughput, metaopt vs learned_optimization, interleaved in one run.

  python benchmarks/meta_train_vs_lo.py [--pairs 3] [--anchor-python ~/lo-venv/bin/python]
  python benchmarks/meta_train_vs_lo.py --platform cuda --anchor-python python3 \
      --anchor-script lo_pes_bench.py --anchor-without-tf     # a GPU box without TF

Runs the anchor (``../shared/anchors/lo_pes_bench.py``: learned_optimization's own PES
stack on the reference config) and this project's ``benchmarks/meta_train.py`` (the same
config through ``metaopt meta-train``'s jitted outer step) as alternating subprocesses
(anchor first in even pairs, project first in odd ones), and prints both inner-step
rates per pair, their ratio (project / anchor) and the median of the paired ratios.
Both figures are means over their timed windows (the anchor: its timed steps; the
project: the mean of its ``--repeats`` windows), never a best window against a mean.

Install the anchor as ``../shared/anchors/README.md`` says; without it this script
prints how and exits 0. Run it only when nothing else runs on the machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHOR = os.path.join(os.path.dirname(ROOT), "shared", "anchors", "lo_pes_bench.py")


def _run(cmd, env) -> str:
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc.stdout


def run_anchor(python: str, script: str = ANCHOR, platform: str = "cpu",
               without_tf: bool = False) -> float:
  env = dict(os.environ, JAX_PLATFORMS=platform)
  wrapper = [os.path.join(ROOT, "benchmarks", "anchor_without_tf.py")] if without_tf else []
  out = _run([python, *wrapper, script], env)
  line = next(ln for ln in out.splitlines() if ln.startswith("RESULT_JSON "))
  return float(json.loads(line[len("RESULT_JSON "):])["inner_steps_per_s"])


def run_project(repeats: int, platform: str = "cpu") -> float:
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS=platform)
  out = _run([sys.executable, os.path.join(ROOT, "benchmarks", "meta_train.py"),
              "--repeats", str(repeats)], env)
  print("  metaopt:", next(ln for ln in out.splitlines() if ln.startswith("devices=")),
        flush=True)
  line = next(ln for ln in out.splitlines() if ln.startswith("PES inner steps/s (wall)"))
  rates = ast.literal_eval(line.split("all ", 1)[1])
  return float(statistics.mean(rates))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--pairs", type=int, default=3)
  p.add_argument("--repeats", type=int, default=3, help="project windows per run")
  p.add_argument("--anchor-python", default=os.path.expanduser("~/lo-venv/bin/python"))
  p.add_argument("--anchor-script", default=ANCHOR,
                 help="lo_pes_bench.py (default: ../shared/anchors/ beside the checkout)")
  p.add_argument("--platform", default="cpu",
                 help="JAX_PLATFORMS for both runs (cuda on a GPU machine)")
  p.add_argument("--anchor-without-tf", action="store_true",
                 help="run the anchor through benchmarks/anchor_without_tf.py (machines "
                      "without TensorFlow, e.g. the lent GPU machine)")
  args = p.parse_args(argv)
  anchor_script = args.anchor_script
  if not (shutil.which(args.anchor_python) and os.path.exists(anchor_script)):
    print(f"skipped: the anchor is not installed ({args.anchor_python} or {anchor_script} "
          f"is missing); install it as {os.path.join(os.path.dirname(ANCHOR), 'README.md')} "
          f"says.")
    return 0
  ratios = []
  for i in range(args.pairs):
    if i % 2 == 0:
      anchor = run_anchor(args.anchor_python, anchor_script, args.platform,
                          args.anchor_without_tf)
      project = run_project(args.repeats, args.platform)
    else:
      project = run_project(args.repeats, args.platform)
      anchor = run_anchor(args.anchor_python, anchor_script, args.platform,
                          args.anchor_without_tf)
    ratios.append(project / anchor)
    print(f"pair {i + 1}: anchor {anchor:.0f} inner steps/s, metaopt {project:.0f}, "
          f"ratio {ratios[-1]:.2f}", flush=True)
  print(f"median of {len(ratios)} paired ratios (metaopt / learned_optimization): "
        f"{statistics.median(ratios):.2f} (target >= 1.5); load average "
        f"{os.getloadavg()[0]:.1f} at the end")
  return 0


if __name__ == "__main__":
  sys.exit(main())
