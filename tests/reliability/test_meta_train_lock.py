"""One run directory holds one meta-training run: a second ``metaopt meta-train`` on a
directory in use exits 2 at once with one line naming the first job, and the first
job's result is intact (docs/reliability.md)."""

import os
import subprocess
import sys
import time
import warnings

import pytest

from metaopt import runlock
from metaopt.lopt import io
from tests.meta.helpers import registered_test_names

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _job(run_dir, *args):
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, "-m", "tests.reliability._meta_cli_job", str(run_dir), *args],
      cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(lock_path, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(lock_path) and str(proc.pid) in open(lock_path).read():
      return
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.1)
  raise AssertionError("the first job never took the lock")


def test_second_job_on_a_run_dir_in_use_is_refused(tmp_path):
  run_dir, go = tmp_path / "run", tmp_path / "go"
  first = _job(run_dir, "--seed", "0", "--wait_for", str(go))
  try:
    _wait_for_lock(run_dir / "run.lock", first)
    second = _job(run_dir, "--seed", "1")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("metaopt meta-train: error: run directory")
    assert f"process {first.pid}" in lines[0] and "run.run_dir" in lines[0]
    assert "theta exported" not in out
  finally:
    go.touch()
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  assert "theta exported" in out
  with registered_test_names():
    _, _, meta = io.load_meta_params(run_dir / "tiny.safetensors")
  assert meta["config"]["seed"] == 0
  assert open(run_dir / "run.lock").read() == ""  # Released cleanly.


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
  lock = str(tmp_path / "run.lock")
  with open(lock, "w") as f:  # What a SIGKILLed holder leaves: its record, no flock.
    f.write('{"pid": 999999, "host": "elsewhere"}\n')
  with pytest.warns(UserWarning, match="process 999999 on host elsewhere .*taking it over"):
    with runlock.hold(lock, "run directory x", "fix"):
      pass


def test_lock_is_exclusive_and_released_on_error(tmp_path):
  lock = str(tmp_path / "run.lock")
  with pytest.raises(KeyError):
    with runlock.hold(lock, "thing", "fix"):
      # flock locks belong to the open file: a second open in this process conflicts.
      with pytest.raises(runlock.RunLockError, match=rf"thing is in use by process "
                         rf"{os.getpid()} on host .*; fix$"):
        with runlock.hold(lock, "thing", "fix"):
          pass
      raise KeyError("boom")
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # Released cleanly: no stale-holder warning.
    with runlock.hold(lock, "thing", "fix"):
      pass
