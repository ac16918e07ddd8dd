"""``metaopt amortized eval`` on a damaged run directory: a truncated or misshaped
``result.npz`` and NaN weights end in one line naming the file, exit 2, and no table
(docs/reliability.md)."""

import os
import shutil

import numpy as np
import pytest

from metaopt import cli
from metaopt.amortized import experiment

TINY = ["--method", "alista", "--problem", "lasso_m64_n128_p0.1_snr40", "--set",
        "train.stage_steps=3", "--set", "train.val_every=3", "--set", "train.val_size=32",
        "--set", "train.num_layers=4", "--set", "eval.num_test=32",
        "--wandb", "disabled", "--no-eval"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("amortized") / "run")
  assert cli.main(["amortized", "train", *TINY, "--out", out]) == 0
  return out


def _copy(tiny_run, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(tiny_run, run)
  return run


def _eval_fails(run, capsys, match):
  capsys.readouterr()
  assert cli.main(["amortized", "eval", "--run", run]) == 2
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("metaopt amortized eval: error: "), captured.err
  assert os.path.join(run, "result.npz") in lines[0] and match in lines[0], lines[0]
  assert "|" not in captured.out  # No table.


def test_truncated_npz(tiny_run, tmp_path, capsys):
  run = _copy(tiny_run, tmp_path)
  path = os.path.join(run, "result.npz")
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  _eval_fails(run, capsys, "truncated or corrupt")


def test_misshaped_npz(tiny_run, tmp_path, capsys):
  run = _copy(tiny_run, tmp_path)
  config, result = experiment.load(run)
  result.params["gamma"] = np.ones((3,), np.float32)  # 4 layers were trained.
  experiment.save(run, config, result)
  _eval_fails(run, capsys, "['gamma'] has shape (3,), expected (4,)")


def test_nan_weights(tiny_run, tmp_path, capsys):
  run = _copy(tiny_run, tmp_path)
  config, result = experiment.load(run)
  result.params["theta"] = np.full_like(np.asarray(result.params["theta"]), np.nan)
  experiment.save(run, config, result)
  _eval_fails(run, capsys, "non-finite learned weights")
