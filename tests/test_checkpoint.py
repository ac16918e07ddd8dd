"""Orbax checkpoints: round trip, keep-last-N, kill leftovers, corrupt and mismatched
checkpoints."""

import json
import os

import numpy as np
import pytest

from metaopt import checkpoint
from metaopt.checkpoint import CheckpointError


def tree(scale=1.0):
  return {"theta": {"w": np.arange(6, dtype=np.float32).reshape(2, 3) * scale},
          "step": np.asarray(7, np.int32), "key": np.asarray([1, 2], np.uint32)}


def test_round_trip_and_keep_last(tmp_path):
  for step in (1, 2, 3, 4):
    checkpoint.save(str(tmp_path), step, tree(step), {"fingerprint": "abc"}, keep=2)
  assert checkpoint.all_steps(str(tmp_path)) == [3, 4]
  assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
  restored, meta = checkpoint.restore(str(tmp_path), tree(), expect={"fingerprint": "abc"})
  assert meta["step"] == 4 and meta["metadata"] == {"fingerprint": "abc"}
  np.testing.assert_array_equal(restored["theta"]["w"], tree(4)["theta"]["w"])
  assert restored["key"].dtype == np.uint32
  older, _ = checkpoint.restore(str(tmp_path), tree(), step=3)
  np.testing.assert_array_equal(older["theta"]["w"], tree(3)["theta"]["w"])


def test_interrupted_save_leaves_previous_checkpoint_and_is_cleaned(tmp_path):
  checkpoint.save(str(tmp_path), 1, tree(), keep=3)
  # A save killed before orbax's final rename leaves only its temporary directory.
  leftover = tmp_path / "2.orbax-checkpoint-tmp-1234567"
  os.makedirs(leftover / "state")
  assert checkpoint.latest_step(str(tmp_path)) == 1
  checkpoint.restore(str(tmp_path), tree())
  assert not leftover.exists()  # Removed when the directory was opened.


def _flip_bytes_in_arrays(step_dir):
  """Overwrites bytes in the middle of the largest file of a step's arrays."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs]
  target = max(files, key=os.path.getsize)
  size = os.path.getsize(target)
  with open(target, "r+b") as f:
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in f.read(16)))
    f.seek(size // 2)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
  big = lambda s: {"w": np.arange(4096, dtype=np.float32) * s}  # noqa: E731
  checkpoint.save(str(tmp_path), 1, big(1.0))
  path = checkpoint.save(str(tmp_path), 2, big(2.0))
  _flip_bytes_in_arrays(path)
  with pytest.warns(UserWarning, match="corrupt.*previous checkpoint"):
    restored, meta = checkpoint.restore(str(tmp_path), big(0.0))
  assert meta["step"] == 1
  np.testing.assert_array_equal(restored["w"], big(1.0)["w"])
  assert (tmp_path / "corrupt_2").is_dir() and checkpoint.all_steps(str(tmp_path)) == [1]
  # With nothing readable left, a clear error.
  _flip_bytes_in_arrays(str(tmp_path / "1"))
  with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="No readable"):
    checkpoint.restore(str(tmp_path), big(0.0))


def test_mismatched_checkpoint_is_refused(tmp_path):
  checkpoint.save(str(tmp_path), 1, tree(), {"lopt": "mlp"})
  with pytest.raises(CheckpointError, match="lopt='mlp'.*lopt='adam'"):
    checkpoint.restore(str(tmp_path), tree(), expect={"lopt": "adam"})
  other = tree()
  other["theta"]["b"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError, match="structure"):
    checkpoint.restore(str(tmp_path), other)
  wrong_shape = tree()
  wrong_shape["theta"]["w"] = np.zeros((3, 2), np.float32)
  with pytest.raises(CheckpointError, match=r"shape \(2, 3\)"):
    checkpoint.restore(str(tmp_path), wrong_shape)


def test_missing_checkpoint(tmp_path):
  assert checkpoint.latest_step(str(tmp_path / "none")) is None
  with pytest.raises(CheckpointError, match="No checkpoint"):
    checkpoint.restore(str(tmp_path), tree())
  assert json.dumps(checkpoint.all_steps(str(tmp_path))) == "[]"
