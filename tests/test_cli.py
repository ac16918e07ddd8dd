"""The ``metaopt`` CLI assembles every sub-command module."""

from metaopt import cli


def test_every_command_is_registered(capsys):
  parser = cli.build_parser()
  text = parser.format_help()
  for name in cli.COMMANDS:
    assert name.replace("_", "-") in text
  assert cli.main([]) == 2  # No command: help printed, usage error code.
  assert "COMMAND" in capsys.readouterr().out
