"""Configs: files, variants, overrides and clear errors."""

import glob
import os

import pytest

from metaopt import lopt as lopt_lib
from metaopt.meta import config as C

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Meta-training configs (other config files in configs/ belong to other commands).
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if "MetaTrainConfig" in open(p).read())


def test_unknown_key_names_it_and_lists_valid_ones():
  with pytest.raises(ValueError, match=r"'num_task'.*Did you mean num_tasks.*Valid keys:"):
    C.from_dict({"num_task": 4})


def test_overrides_are_typed():
  cfg = C.apply_overrides(C.MetaTrainConfig(), ["num_tasks=16", "outer_lr=1e-2",
                                                "estimator=tbptt", "random_offsets=False",
                                                "lopt_config.hidden_sizes=(16, 16)"])
  assert cfg.num_tasks == 16 and cfg.outer_lr == 0.01 and cfg.estimator == "tbptt"
  assert cfg.random_offsets is False and cfg.lopt_config == {"hidden_sizes": (16, 16)}
  assert C.apply_overrides(cfg, ["outer_lr=1"]).outer_lr == 1.0  # int widened to float
  with pytest.raises(ValueError, match="'num_tasks' expects int"):
    C.apply_overrides(cfg, ["num_tasks=many"])
  with pytest.raises(ValueError, match="key=value"):
    C.apply_overrides(cfg, ["num_tasks"])


def test_bad_choices_are_explained():
  with pytest.raises(ValueError, match="estimator 'pse'.*'pes'"):
    C.MetaTrainConfig(estimator="pse")
  with pytest.raises(ValueError, match="mix_weights"):
    C.MetaTrainConfig(estimator="mix")
  with pytest.raises(ValueError, match="num_tasks must be >= 1"):
    C.MetaTrainConfig(num_tasks=0)


def test_fingerprint_ignores_bookkeeping_only():
  a = C.MetaTrainConfig()
  assert a.fingerprint() == C.from_dict({"num_steps": 5, "run_dir": "x"}).fingerprint()
  assert a.fingerprint() != C.from_dict({"sigma": 0.02}).fingerprint()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_files_load_in_both_variants(path):
  for variant in ("cpu", "pod"):
    cfg = C.load_config(f"{path}:{variant}")
    assert isinstance(cfg, C.MetaTrainConfig)
    lopt_lib.build(cfg.lopt, cfg.lopt_config)  # the architecture and its config exist
  with pytest.raises(ValueError, match="variant"):
    C.load_config(f"{path}:nope")


def test_every_architecture_has_an_experiment():
  archs = {C.load_config(p).lopt for p in CONFIG_FILES}
  missing = set(lopt_lib.arch_names()) - archs
  assert not missing, f"no configs/*.py meta-trains {sorted(missing)}"


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="does not exist"):
    C.load_config("configs/nope.py")


def test_cli_reports_config_errors_and_prints_config(capsys):
  from metaopt import cli  # pylint: disable=import-outside-toplevel
  path = os.path.join(ROOT, "configs", "mlp_digits.py")
  assert cli.main(["meta-train", path, "--set", "num_task=3"]) == 2
  assert "num_tasks" in capsys.readouterr().err
  assert cli.main(["meta-train", f"{path}:pod", "--set", "seed=3", "--print-config"]) == 0
  out = capsys.readouterr().out
  assert '"seed": 3' in out and '"num_tasks": 256' in out
