"""``metaopt list [tasks|families|optimizers|lopts]``: print the registries."""

from __future__ import annotations

import argparse

KINDS = ("tasks", "families", "optimizers", "lopts")


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("list", help="list tasks, task families, optimizers, "
                            "learned-optimizer architectures")
  p.add_argument("kind", nargs="?", choices=KINDS, default=None,
                 help="what to list (default: everything)")
  p.set_defaults(func=main)


def _lines(kind: str):
  if kind == "tasks":
    import tasks  # pylint: disable=import-outside-toplevel
    return tasks.task_names()
  if kind == "families":
    import tasks  # pylint: disable=import-outside-toplevel
    return tasks.family_names()
  if kind == "optimizers":
    from metaopt import optimizers  # pylint: disable=import-outside-toplevel
    out = []
    for name in optimizers.names():
      s = optimizers.spec(name)
      tag = " [self-tuning]" if s.self_tuning else ""
      out.append(f"{name:<22}{s.description}{tag}")
    return out
  from metaopt import lopt  # pylint: disable=import-outside-toplevel
  return lopt.arch_names()


def main(args: argparse.Namespace) -> int:
  kinds = [args.kind] if args.kind else list(KINDS)
  for kind in kinds:
    lines = _lines(kind)
    if len(kinds) > 1:
      print(f"{kind} ({len(lines)}):")
    for line in lines:
      print(f"  {line}" if len(kinds) > 1 else line)
    if not lines:
      print("  (none registered)" if len(kinds) > 1 else "(none registered)")
  return 0
