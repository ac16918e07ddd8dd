"""metaopt.runlog: JSONL rows, config, resume/truncate, wandb off paths, plots."""

import json
import math
import os
import sys

import numpy as np
import pytest

from metaopt.runlog import MetricsLogger, plot_curves, read_metrics, truncate_metrics


def test_rows_round_trip(tmp_path):
  run = tmp_path / "run"
  with MetricsLogger(str(run), config={"lr": 0.1, "shape": (2, 3)}, mode="disabled") as log:
    log.log(1, {"loss": np.float32(2.5), "vec": np.arange(3), "nan": float("nan")})
    log.log(2, {"loss": 1.25})
  rows = read_metrics(str(run))
  assert rows[0]["step"] == 1 and rows[0]["loss"] == 2.5 and rows[0]["vec"] == [0, 1, 2]
  assert math.isnan(rows[0]["nan"])
  assert rows[1] == {"step": 2, "loss": 1.25}
  assert read_metrics(str(run / "metrics.jsonl")) == rows
  with open(run / "config.json") as f:
    assert json.load(f) == {"lr": 0.1, "shape": [2, 3]}


def test_resume_appends_and_fresh_start_overwrites(tmp_path):
  run = str(tmp_path)
  with MetricsLogger(run, mode="disabled") as log:
    log.log(1, {"a": 1})
  with MetricsLogger(run, mode="disabled", resume=True) as log:
    log.log(2, {"a": 2})
  assert [r["step"] for r in read_metrics(run)] == [1, 2]
  with MetricsLogger(run, mode="disabled") as log:
    log.log(7, {"a": 7})
  assert [r["step"] for r in read_metrics(run)] == [7]


def test_truncate_metrics(tmp_path):
  run = str(tmp_path)
  with MetricsLogger(run, mode="disabled") as log:
    for step in range(1, 6):
      log.log(step, {"x": step * 1.5})
  truncate_metrics(os.path.join(run, "metrics.jsonl"), 3)
  assert read_metrics(run) == [{"step": s, "x": s * 1.5} for s in (1, 2, 3)]
  truncate_metrics(os.path.join(run, "missing.jsonl"), 3)  # No file: nothing to do.
  assert not os.path.exists(os.path.join(run, "missing.jsonl"))


def test_half_written_last_line_is_dropped_with_a_warning(tmp_path):
  run = str(tmp_path)
  with MetricsLogger(run, mode="disabled") as log:
    for step in (1, 2, 3):
      log.log(step, {"x": float(step)})
  path = os.path.join(run, "metrics.jsonl")
  with open(path, "a") as f:
    f.write('{"step": 4, "x": 4.')  # Killed in the middle of a write.
  with pytest.warns(UserWarning, match="metrics.jsonl: dropped a half-written last line"):
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
  with pytest.warns(UserWarning, match="half-written"):
    truncate_metrics(path, 10)
  assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]  # Repaired: no warning now.
  # Resuming the logger after such a kill appends a clean row, not a glued line.
  with open(path, "a") as f:
    f.write('{"step": 4, "x"')
  with pytest.warns(UserWarning, match="half-written"):
    with MetricsLogger(run, mode="disabled", resume=True) as log:
      log.log(4, {"x": 4.0})
  assert read_metrics(run)[-1] == {"step": 4, "x": 4.0}


def test_a_corrupt_middle_line_names_the_file_and_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON metrics row"):
    read_metrics(str(tmp_path))


def test_wandb_disabled_by_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "disabled")
  log = MetricsLogger(str(tmp_path), mode="offline")
  assert log._wandb is None
  log.log(0, {"a": 1.0})
  log.close()
  assert not os.path.exists(tmp_path / "wandb")


def test_missing_wandb_falls_back_to_jsonl(tmp_path, monkeypatch):
  monkeypatch.delenv("WANDB_MODE", raising=False)
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError.
  with pytest.warns(UserWarning, match="wandb is not installed"):
    log = MetricsLogger(str(tmp_path), mode="offline")
  log.log(3, {"a": 1.0})
  log.close()
  assert read_metrics(str(tmp_path)) == [{"step": 3, "a": 1.0}]


def test_bad_mode():
  with pytest.raises(ValueError, match="offline"):
    MetricsLogger("/tmp/unused_metaopt_run", mode="cloud")


def test_plot_curves_writes_png(tmp_path):
  rows = [{"step": s, "train_loss": 1.0 / s, "valid_loss": float("nan") if s == 2 else 2.0 / s}
          for s in range(1, 6)]
  path = plot_curves(rows, ["train_loss", "valid_loss"], str(tmp_path / "sub" / "c.png"),
                     title="t")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(path) > 1000
