"""``metaopt train`` / ``metaopt list`` end to end through ``metaopt.cli.main``."""

import json
import os
import re

from metaopt import cli, optimizers
from metaopt.runlog import read_metrics
from tests.optimizers.tiny_tasks import register_linreg


def test_train_end_to_end(tmp_path, capsys):
  name = register_linreg()
  out = str(tmp_path / "run")
  rc = cli.main(["train", "--task", name, "--optimizer", "adam", "--steps", "40",
                 "--lr", "0.05", "--hparam", "b1=0.8", "--eval-every", "10", "--out", out,
                 "--wandb", "disabled", "--no-progress"])
  assert rc == 0
  printed = capsys.readouterr().out
  assert "final train loss" in printed and "final valid loss" in printed and out in printed
  rows = read_metrics(out)
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  assert rows[-1]["valid_loss"] < rows[0]["valid_loss"]
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["hparams"]["learning_rate"] == 0.05 and config["hparams"]["b1"] == 0.8
  assert config["task"] == name and config["steps"] == 40
  with open(os.path.join(out, "curve.png"), "rb") as f:
    assert f.read(4) == b"\x89PNG"


def test_bad_names_give_clean_errors(capsys):
  name = register_linreg()
  assert cli.main(["train", "--task", "test_tiny_linrge", "--steps", "5"]) == 2
  err = capsys.readouterr().err
  assert "Unknown task" in err and "Did you mean" in err and name in err
  assert "Traceback" not in err
  assert cli.main(["train", "--task", name, "--optimizer", "adma"]) == 2
  err = capsys.readouterr().err
  assert "Unknown optimizer 'adma'" in err and "adam" in err
  assert cli.main(["train", "--task", name, "--hparam", "beta=1"]) == 2
  assert "valid ones" in capsys.readouterr().err
  assert cli.main(["train", "--task", name, "--optimizer", "schedule_free_adamw",
                   "--schedule", "cosine", "--steps", "5"]) == 2
  assert "constant learning rate" in capsys.readouterr().err


def test_typed_hparam_gives_a_clean_error(capsys):
  name = register_linreg()
  assert cli.main(["train", "--task", name, "--hparam", "b1=abc", "--steps", "5",
                   "--wandb", "disabled", "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "b1 must be a number" in err and "'abc'" in err and "Traceback" not in err


def test_a_blowup_exits_1_and_names_the_step(tmp_path, capsys):
  name = register_linreg()
  rc = cli.main(["train", "--task", name, "--optimizer", "sgd", "--lr", "5", "--steps", "40",
                 "--eval-every", "10", "--out", str(tmp_path / "run"), "--wandb", "disabled",
                 "--no-progress"])
  captured = capsys.readouterr()
  assert rc == 1 and "(DIVERGED)" in captured.out
  step = int(re.search(r"diverged at step (\d+)", captured.err).group(1))
  assert 0 < step < 40 and "smaller --lr" in captured.err


def test_list(capsys):
  register_linreg()
  assert cli.main(["list", "optimizers"]) == 0
  out = capsys.readouterr().out
  assert "adam " in out and "prodigy" in out and "[self-tuning]" in out
  assert cli.main(["list", "tasks"]) == 0
  assert "test_tiny_linreg" in capsys.readouterr().out.split()
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert f"optimizers ({len(optimizers.names())}):" in out and "lopts (" in out


def test_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
  import metaopt.train  # pylint: disable=import-outside-toplevel

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(metaopt.train, "run", interrupted)
  rc = cli.main(["train", "--task", "quadratic_d10_cond10", "--optimizer", "adam",
                 "--steps", "5", "--out", str(tmp_path / "r"), "--no-progress"])
  err = capsys.readouterr().err
  assert rc == 130 and "interrupted" in err and "Traceback" not in err
