"""`metaopt amortized train/eval` end to end on a tiny run."""

import json
import os

import pytest

from metaopt import cli
from metaopt.amortized import experiment


def test_train_then_eval_writes_table_and_plot(tmp_path, capsys):
  out = str(tmp_path / "run")
  rc = cli.main(["amortized", "train", "--method", "alista", "--problem",
                 "lasso_m64_n128_p0.1_snr40", "--set", "steps=5", "num_layers=4",
                 "num_test=32", "--out", out, "--wandb", "disabled"])
  assert rc == 0
  for name in ("experiment.json", "result.pkl", "metrics.jsonl", "results.md", "curves.png"):
    assert os.path.exists(os.path.join(out, name)), name
  first = json.load(open(os.path.join(out, "curves.json")))
  assert set(first) == {"ISTA", "FISTA", "ALISTA"} and len(first["ALISTA"]) == 5
  os.remove(os.path.join(out, "curves.png"))
  assert cli.main(["amortized", "eval", "--run", out]) == 0
  assert os.path.exists(os.path.join(out, "curves.png"))
  # Same saved model, same held-out seed: the same numbers.
  assert json.load(open(os.path.join(out, "curves.json"))) == first
  assert "| ALISTA |" in capsys.readouterr().out


def test_config_file_and_bad_inputs(tmp_path):
  cfg = experiment.load_config_file("configs/amortized_lista.py")
  assert cfg["method"] == "lista"
  with pytest.raises(SystemExit, match="known"):
    cli.main(["amortized", "train", "--method", "lista", "--problem",
              "lasso_m64_n128_p0.1_snr40", "--set", "stepz=3", "--out", str(tmp_path)])
  with pytest.raises(SystemExit, match="Unknown problem"):
    cli.main(["amortized", "train", "--method", "lista", "--problem", "lasso_tiny",
              "--out", str(tmp_path)])
  with pytest.raises(SystemExit, match="written by"):
    cli.main(["amortized", "eval", "--run", str(tmp_path / "nothing")])
