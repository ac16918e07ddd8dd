"""A full disk while meta-training is one line, not a traceback (nor dozens of logged
orbax tracebacks), and the run resumes from the checkpoints written before to the
same θ as an uninterrupted run (docs/reliability.md)."""

import errno
import logging
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import orbax.checkpoint as ocp
import pytest

from metaopt import checkpoint
from metaopt.lopt import io
from tests.meta.helpers import registered_test_names

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_checkpoint_on_a_full_disk_is_one_error_line(tmp_path, monkeypatch, caplog):
  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with caplog.at_level(logging.INFO), pytest.raises(
      checkpoint.CheckpointError, match=r"step 3 .*no space left on device.*written before "
      r"are intact.*re-run the same command to resume"):
    checkpoint.save(str(tmp_path), 3, {"a": np.ones(3)})
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB tmpfs (needs root; skipped elsewhere)."""
  where = tmp_path / "disk"
  where.mkdir()
  if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
      capture_output=True).returncode:
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  try:
    yield where
  finally:
    subprocess.run(["umount", str(where)], check=False)


def _job(run_dir, num_steps):
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "tests.reliability._meta_cli_job", str(run_dir), "--num_steps",
       str(num_steps)], cwd=_REPO, env=env, capture_output=True, text=True, timeout=300)


def _fill(disk, leave_bytes):
  filler = disk / f"filler-{uuid.uuid4().hex}"
  with open(filler, "wb", buffering=0) as f:
    try:
      while True:
        f.write(b"\1" * 4096)
    except OSError:
      pass
  with open(filler, "r+b") as f:
    f.truncate(max(0, os.path.getsize(filler) - leave_bytes))
  return filler


def _theta(path):
  with registered_test_names():
    return io.load_meta_params(path)[1]


@pytest.mark.slow
@pytest.mark.parametrize("free_kib", [4, 24, 40])
def test_disk_full_mid_run_is_one_line_and_resume_is_exact(tmp_path, small_disk, free_kib):
  """``free_kib`` left: the lock file or config cannot be written (4); a checkpoint
  fails early or late, its writer threads still reporting after the failure (24, 40)."""
  run_dir = small_disk / "run"
  assert _job(run_dir, 4).returncode == 0
  filler = _fill(small_disk, free_kib * 1024)
  proc = _job(run_dir, 8)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  # The checkpoint, a metrics row or a plot: whichever write meets the full disk first.
  assert len(lines) == 1 and "no space left on device" in lines[0].lower(), proc.stderr[-3000:]
  assert "re-run the same command to resume" in lines[0]
  filler.unlink()
  proc = _job(run_dir, 8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _job(tmp_path / "ref", 8).returncode == 0
  np.testing.assert_array_equal(_theta(run_dir / "tiny.safetensors"),
                                _theta(tmp_path / "ref" / "tiny.safetensors"))
