"""Bad inputs end in one clear error naming the value and the fix, not a traceback or a
wrong answer (docs/reliability.md)."""

import pytest

from metaopt.meta import config as config_lib


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", ""])
def test_run_name_that_escapes_the_run_dir_is_refused(name):
  with pytest.raises(ValueError, match=r"run.name=.*not a plain file name.*run.run_dir"):
    config_lib.from_dict({"run.name": name})


def test_meta_train_run_dir_that_is_a_file_is_one_error(tmp_path):
  from metaopt.meta import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  from tests.meta import _meta_script as script  # pylint: disable=import-outside-toplevel
  from tests.meta.helpers import registered_test_names  # pylint: disable=import-outside-toplevel
  taken = tmp_path / "taken"
  taken.write_text("x")
  with registered_test_names():
    trainer = trainer_lib.MetaTrainer(script.config(str(taken), 2), **script.objects())
    with pytest.raises(ValueError, match="is an existing file, not a directory"):
      trainer.run(progress=False)
  assert taken.read_text() == "x"


def test_amortized_train_out_existing_file_is_one_line(tmp_path, capsys):
  from metaopt import cli  # pylint: disable=import-outside-toplevel
  taken = tmp_path / "taken"
  taken.write_text("x")
  assert cli.main(["amortized", "train", "--method", "alista", "--problem",
                   "lasso_m64_n128_p0.1_snr40", "--out", str(taken), "--wandb",
                   "disabled"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "is an existing file, not a directory" in err[0]
  assert taken.read_text() == "x"
