"""``metaopt list [tasks|families|optimizers|pretrained|lopts|configs]``: print the
registries: tasks, task families, baseline optimizers, shipped learned optimizers,
learned-optimizer architectures and shipped configs."""

from __future__ import annotations

import argparse

KINDS = ("tasks", "families", "optimizers", "pretrained", "lopts", "configs")


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("list", help="list tasks, task families, optimizers, shipped "
                            "learned optimizers, architectures, configs")
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
  if kind == "pretrained":
    from metaopt import pretrained  # pylint: disable=import-outside-toplevel
    out = []
    for name in pretrained.names():
      header = pretrained.header(name)
      desc = str((header.get("metadata") or {}).get("description") or "").split(". ")[0]
      desc = desc if len(desc) <= 80 else desc[:77].rstrip(" ,;") + "..."
      out.append(f"{name:<22}[{header.get('arch', '?')}] {desc}".rstrip())
    return out
  if kind == "configs":
    from metaopt import typed_config  # pylint: disable=import-outside-toplevel
    return list(typed_config.config_names())
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
