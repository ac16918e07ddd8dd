"""The ``metaopt`` CLI assembles every sub-command module."""

import os

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
