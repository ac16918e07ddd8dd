"""``metaopt`` command line. Each sub-command lives in ``metaopt/commands/<name>.py``
and exposes ``add_parser(subparsers)`` that registers itself with ``func`` set."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order ``metaopt --help`` lists them.
COMMANDS = ("demo", "train", "meta_train", "leaderboard", "amortized", "list")


def _unavailable(sub, name: str, error: ImportError) -> None:
  """A sub-command whose module needs a package that is not installed (the core install,
  ``pip install metaopt-jax``, has no haiku, orbax...): listed, and one line saying which
  extra to install when called."""
  missing = getattr(error, "name", None) or str(error)
  p = sub.add_parser(name.replace("_", "-"), help=f"(needs pip install 'metaopt-jax[all]': "
                     f"{missing} is not installed)", add_help=False)
  p.add_argument("rest", nargs=argparse.REMAINDER)

  def fail(args) -> int:
    print(f"metaopt {name.replace('_', '-')}: error: this command needs {missing}, which is "
          "not installed; pip install 'metaopt-jax[all]' (or the [meta] / [leaderboard] "
          "extra).", file=sys.stderr)
    return 2

  p.set_defaults(func=fail)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="metaopt", description="Learned optimizers in JAX: train, meta-train, evaluate.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name in COMMANDS:
    try:
      module = importlib.import_module(f"metaopt.commands.{name}")
    except ImportError as e:  # An extra is not installed: the command says which.
      _unavailable(sub, name, e)
      continue
    module.add_parser(sub)
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
