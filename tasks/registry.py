"""Explicit Python registry of tasks and task families (no gin).

Names are stable: once a leaderboard result points at a name, the task it builds
must not change; make a new name (``..._v2``) instead.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, List

from tasks.base import Task, TaskFamily

_TASKS: Dict[str, Callable[[], Task]] = {}
_FAMILIES: Dict[str, Callable[[], TaskFamily]] = {}


class UnknownNameError(KeyError):
  """Raised for an unknown registry name; the message lists close matches."""

  def __str__(self):  # KeyError quotes its message; keep it readable.
    return str(self.args[0])


def unknown_name_error(kind: str, name: str, known: List[str]) -> UnknownNameError:
  known = sorted(set(known))  # A task and a family may share a name.
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
  hint = f" Did you mean: {', '.join(close)}?" if close else ""
  return UnknownNameError(
      f"Unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(sorted(known))}.")


def register_task(name: str, factory: Callable[[], Task]) -> None:
  """Registers a zero-argument factory building the task ``name`` lazily."""
  if name in _TASKS:
    raise ValueError(f"Task {name!r} is already registered.")
  _TASKS[name] = factory


def register_family(name: str, factory: Callable[[], TaskFamily]) -> None:
  if name in _FAMILIES:
    raise ValueError(f"Task family {name!r} is already registered.")
  _FAMILIES[name] = factory


def get(name: str) -> Task:
  """The task registered as ``name`` (built on each call; cheap, data is cached)."""
  if name not in _TASKS:
    raise unknown_name_error("task", name, list(_TASKS) + list(_FAMILIES))
  return _TASKS[name]()


def get_family(name: str) -> TaskFamily:
  if name not in _FAMILIES:
    raise unknown_name_error("task family", name, list(_FAMILIES) + list(_TASKS))
  return _FAMILIES[name]()


def task_names() -> List[str]:
  return sorted(_TASKS)


def family_names() -> List[str]:
  return sorted(_FAMILIES)


def names() -> List[str]:
  """All registered task and family names."""
  return sorted(set(_TASKS) | set(_FAMILIES))
