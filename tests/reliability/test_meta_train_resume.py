"""Resume is refused, naming the fields that differ, when the checkpoint was written by
another setup: a changed architecture default, another package version, a cosine
outer schedule over another ``outer.num_steps``; a checkpoint beyond
``outer.num_steps`` is not exported under the smaller count; ``run.accept_changes``
resumes on purpose, with a warning (docs/reliability.md)."""

import pytest

import metaopt
from metaopt.checkpoint import CheckpointError
from metaopt.lopt import io
from metaopt.meta import trainer as trainer_lib
from tests.meta import _meta_script as script
from tests.meta.helpers import LrMomConfig, registered_test_names


@pytest.fixture(autouse=True)
def test_names():
  with registered_test_names():
    yield


def _trainer(run_dir, num_steps=4, **overrides):
  cfg = script.config(str(run_dir), num_steps, **{"eval.every": 0, **overrides})
  return trainer_lib.MetaTrainer(cfg, **script.objects())


def _run(run_dir, num_steps=4, **overrides):
  return _trainer(run_dir, num_steps, **overrides).run(progress=False)


def test_changed_architecture_default_is_refused_naming_the_field(tmp_path, monkeypatch):
  _run(tmp_path)
  # A new metaopt version changes a default the user never set.
  monkeypatch.setattr(LrMomConfig.__init__, "__defaults__", (-3.0, 0.0))
  with pytest.raises(CheckpointError, match=r"lopt_config.init_log_lr: -2.0 -> -3.0.*"
                     r"--set run.run_dir=DIR.*--set run.accept_changes=true"):
    _run(tmp_path, num_steps=8)
  with pytest.warns(UserWarning, match=r"lopt_config.init_log_lr: -2.0 -> -3.0"):
    result = _run(tmp_path, num_steps=8, **{"run.accept_changes": True})
  assert result.step == 8
  # The export says where θ changed setup.
  _, _, meta = io.load_meta_params(result.export_path)
  assert meta["setup_changes"] == [
      {"step": 4, "changes": {"lopt_config.init_log_lr": [-2.0, -3.0]}}]


def test_other_package_version_is_refused(tmp_path, monkeypatch):
  _run(tmp_path)
  monkeypatch.setattr(metaopt, "__version__", "99.0")
  with pytest.raises(CheckpointError, match=r"package_version: '[^']+' -> '99.0'"):
    _run(tmp_path, num_steps=8)


def test_num_steps_below_the_checkpoint_is_refused(tmp_path):
  _run(tmp_path, num_steps=8)
  with pytest.raises(CheckpointError, match=r"at outer step 8, beyond outer.num_steps=4.*"
                     r"outer.num_steps >= 8"):
    _run(tmp_path, num_steps=4)


def test_num_steps_of_a_cosine_schedule_is_part_of_the_setup(tmp_path):
  _run(tmp_path, num_steps=4, **{"outer.lr_schedule": "cosine"})
  with pytest.raises(CheckpointError, match=r"outer.num_steps: 4 -> 8"):
    _run(tmp_path, num_steps=8, **{"outer.lr_schedule": "cosine"})
  # A constant learning rate: extending the run is bookkeeping.
  _run(tmp_path / "constant", num_steps=4)
  assert _run(tmp_path / "constant", num_steps=8).step == 8
