"""Atomic checkpoints: round trip, keep-last-N, corrupt and mismatched checkpoints."""

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
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
  restored, meta = checkpoint.restore(str(tmp_path), tree(), expect={"fingerprint": "abc"})
  assert meta["step"] == 4
  np.testing.assert_array_equal(restored["theta"]["w"], tree(4)["theta"]["w"])
  assert restored["key"].dtype == np.uint32
  older, _ = checkpoint.restore(str(tmp_path), tree(), step=3)
  np.testing.assert_array_equal(older["theta"]["w"], tree(3)["theta"]["w"])


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
  checkpoint.save(str(tmp_path), 1, tree(), keep=3)
  # A save killed before its rename leaves only a temporary directory behind.
  os.makedirs(tmp_path / ".tmp_step_000000002_123")
  assert checkpoint.latest_step(str(tmp_path)) == 1
  checkpoint.restore(str(tmp_path), tree())


def test_corrupt_checkpoint_is_refused(tmp_path):
  path = checkpoint.save(str(tmp_path), 5, tree())
  with open(os.path.join(path, "arrays.npz"), "r+b") as f:
    f.seek(100)
    f.write(b"garbage!")
  with pytest.raises(CheckpointError, match="corrupt"):
    checkpoint.restore(str(tmp_path), tree())
  with open(os.path.join(path, "meta.json"), "w") as f:
    f.write("{not json")
  with pytest.raises(CheckpointError, match="corrupt"):
    checkpoint.restore(str(tmp_path), tree())


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
