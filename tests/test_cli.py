"""The ``metaopt`` CLI assembles every sub-command module."""

import os

import pytest

from metaopt import cli


def test_every_command_is_registered(capsys):
  parser = cli.build_parser()
  text = parser.format_help()
  for name in cli.COMMANDS:
    assert name.replace("_", "-") in text
  assert cli.main([]) == 2  # No command: help printed, usage error code.
  assert "COMMAND" in capsys.readouterr().out


def test_wrongly_typed_set_values_exit_2_with_one_line(capsys):
  """``--set`` values are typed: a text where a tuple/int is expected names the key."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  assert cli.main(["meta-train", os.path.join(root, "configs", "mlp_digits.py"), "--set",
                   "lopt_config.hidden_sizes=abc", "--print-config"]) == 2
  err = capsys.readouterr().err.strip()
  assert "'lopt_config.hidden_sizes' expects tuple of int, got 'abc'" in err
  assert len(err.splitlines()) == 1 and "Traceback" not in err


# -- overrides: one syntax in every command --------------------------------------------

def _one_line_error(capsys, *needles):
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  for needle in needles:
    assert needle in err, err
  return err


def test_meta_train_takes_a_shipped_config_by_name_and_repeated_set(capsys):
  import json
  assert cli.main(["meta-train", "mlp_digits:pod", "--set", "seed=3", "--set",
                   "outer.num_steps=7", "estimator.sigma=0.02", "--print-config"]) == 0
  cfg = json.loads(capsys.readouterr().out)
  assert (cfg["seed"], cfg["outer"]["num_steps"], cfg["estimator"]["sigma"]) == (3, 7, 0.02)


def test_conflicting_or_malformed_overrides_fail_with_one_line(capsys, tmp_path):
  base = ["meta-train", "mlp_digits", "--print-config", "--set"]
  assert cli.main(base + ["seed=1", "--set", "seed=2"]) == 2
  _one_line_error(capsys, "Conflicting overrides 'seed=1' and 'seed=2'")
  assert cli.main(base + ["estimator.sigma=0.1", "--set", "estimator={'sigma': 0.2}"]) == 2
  _one_line_error(capsys, "both set 'estimator.sigma'")
  assert cli.main(base + ["seed", "3"]) == 2
  _one_line_error(capsys, "write --set seed=3")
  assert cli.main(base + ["seed=" + "9" * 30]) == 2
  _one_line_error(capsys, "'seed' expects an integer in the int64 range")
  assert cli.main(["meta-train", "mlp_digits", "--print-config", "--set", "seed=1",
                   "--set", "seed=1"]) == 0  # The same value twice is harmless.
  capsys.readouterr()


def test_a_json_file_or_a_folder_as_config_fails_naming_it(capsys, tmp_path):
  record = tmp_path / "config.json"
  record.write_text("{}")
  assert cli.main(["meta-train", str(record), "--print-config"]) == 2
  _one_line_error(capsys, str(record), "not a Python config file")
  assert cli.main(["meta-train", str(tmp_path), "--print-config"]) == 2
  _one_line_error(capsys, str(tmp_path), "is a folder")
  assert cli.main(["meta-train", "general-v2", "--print-config"]) == 2
  _one_line_error(capsys, "Did you mean general_v2")
  assert cli.main(["amortized", "train", "--config", str(tmp_path), "--out",
                   str(tmp_path / "run")]) == 2
  _one_line_error(capsys, "is a folder")


def test_amortized_keeps_every_repeated_set():
  from metaopt.commands import amortized
  parser = cli.build_parser()
  args = parser.parse_args(["amortized", "train", "--config", "amortized_lista", "--set",
                            "train.steps=5", "--set", "eval.num_test=16", "train.num_layers=3",
                            "--out", "unused"])
  config = amortized._config(args)  # pylint: disable=protected-access
  assert (config.train.steps, config.eval.num_test, config.train.num_layers) == (5, 16, 3)
  args = parser.parse_args(["amortized", "train", "--config", "amortized_lista", "--set",
                            "train.steps=5", "--set", "train.steps=6", "--out", "unused"])
  with pytest.raises(ValueError, match="Conflicting overrides"):
    amortized._config(args)  # pylint: disable=protected-access


# -- shipped learned optimizers in the CLI ---------------------------------------------

def test_list_pretrained_and_pretrained_names(capsys):
  import metaopt
  from metaopt.lopt import io
  names = metaopt.pretrained_names()
  assert names == io.pretrained_names() and "general-v2" in names
  assert cli.main(["list", "pretrained"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in out] == names
  assert cli.main(["list", "configs"]) == 0
  assert "general_v2" in capsys.readouterr().out.split()
  with pytest.raises(KeyError, match="Did you mean general-v2"):
    metaopt.load("general_v2")


def test_train_with_a_shipped_learned_optimizer(tmp_path, capsys):
  import json
  from tests.optimizers.tiny_tasks import register_linreg
  name = register_linreg()
  out = str(tmp_path / "run")
  assert cli.main(["train", "--task", name, "--optimizer", "general-v2", "--steps", "30",
                   "--eval-every", "10", "--out", out, "--wandb", "disabled",
                   "--no-progress"]) == 0
  assert "final valid loss" in capsys.readouterr().out
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["kind"] == "learned" and config["arch"] == "general"
  rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
  assert rows[-1]["valid_loss"] < rows[0]["valid_loss"]
  # A near-miss name suggests the shipped one; a learning rate is refused.
  assert cli.main(["train", "--task", name, "--optimizer", "general_v2"]) == 2
  _one_line_error(capsys, "Did you mean general-v2")
  assert cli.main(["train", "--task", name, "--optimizer", "general-v2", "--lr", "1"]) == 2
  _one_line_error(capsys, "no learning rate")
  assert cli.main(["train", "--task", name, "--optimizer", str(tmp_path / "x.safetensors"),
                   "--steps", "5", "--no-progress", "--wandb", "disabled"]) == 2
  _one_line_error(capsys, "x.safetensors")


def test_a_command_whose_extra_is_missing_says_which_to_install(monkeypatch, capsys):
  import sys
  monkeypatch.setitem(sys.modules, "metaopt.commands.amortized", None)  # import fails
  assert "amortized" in cli.build_parser().format_help()
  assert cli.main(["amortized", "train", "--out", "x"]) == 2
  _one_line_error(capsys, "pip install 'metaopt-jax[all]'")
  assert cli.main(["list", "pretrained"]) == 0
