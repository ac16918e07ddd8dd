"""Meta-training killed with SIGKILL at random moments (between steps, while writing a
checkpoint or the export) and resumed ends with the same theta and the same metrics as
an uninterrupted run, and leaves no temporary files (docs/reliability.md)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

from metaopt.lopt import io
from metaopt.meta import trainer as trainer_lib

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(run_dir, num_steps):
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, "-m", "tests.meta._meta_script", str(run_dir), "--num_steps",
       str(num_steps)], cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


def _finish(proc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def _rows(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in trainer_lib.TIMING_KEYS} for r in rows]


def test_random_kills_then_resume_equal_uninterrupted(tmp_path):
  seed = random.randrange(1 << 30)
  rng = random.Random(seed)
  num_steps = 24
  start = time.perf_counter()
  reference = _finish(_start(tmp_path / "ref", num_steps))
  duration = time.perf_counter() - start

  run_dir = tmp_path / "killed"
  kills = 0
  for _ in range(3):
    proc = _start(run_dir, num_steps)
    time.sleep(rng.uniform(0.3, 1.0) * duration)
    if proc.poll() is not None:  # Finished before the kill.
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
  resumed = _finish(_start(run_dir, num_steps))
  note = f"random seed {seed}, {kills} kills"
  assert resumed["theta"] == reference["theta"], note
  assert _rows(run_dir) == _rows(tmp_path / "ref"), note
  leftovers = [f for _, dirs, files in os.walk(run_dir) for f in dirs + files
               if "tmp" in f or f.startswith("corrupt_")]
  assert not leftovers, (note, leftovers)
  assert not io.remove_stale_temporaries(run_dir / "tiny.safetensors")
