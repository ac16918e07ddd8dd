"""``metaopt`` command line. Each sub-command lives in ``metaopt/commands/<name>.py``
and exposes ``add_parser(subparsers)`` that registers itself with ``func`` set."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order ``metaopt --help`` lists them.
COMMANDS = ("demo", "train", "meta_train", "leaderboard", "amortized", "list")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="metaopt", description="Learned optimizers in JAX: train, meta-train, evaluate.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name in COMMANDS:
    importlib.import_module(f"metaopt.commands.{name}").add_parser(sub)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
