"""Name registries: the generic ``Registry`` type, and the registry of tasks and task
families (no gin).

``Registry`` is the one registry type of the project (tasks, problems, baseline
optimizers, learned-optimizer architectures, gradient estimators, leaderboard suites
all use it); it lives here, in the lowest layer, because ``metaopt`` imports ``tasks``
and never the reverse. ``unknown_name_message`` words the "unknown name, did you
mean" error of lookups that are not a registry (feature names, config keys).

Task names are stable: once a leaderboard result points at a name, the task it builds
must not change; make a new name (``..._v2``) instead.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterable, List, Optional, TypeVar

from tasks.base import Task, TaskFamily

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
  """An unknown name; the message lists close matches and every known name.

  Both a ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad argument), so
  callers catching either keep working.
  """

  def __str__(self):  # KeyError quotes its message; keep it readable.
    return str(self.args[0])


class DuplicateNameError(ValueError):
  """A name registered twice (pass ``overwrite=True`` to replace on purpose)."""


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
  """``"Unknown <kind> 'name'. Did you mean a, b? Known: a, b, c."``

  Args:
    kind: what ``name`` was supposed to be (``"task"``, ``"feature"``...).
    name: the name that was not found.
    known: every valid name (duplicates and order do not matter).
  """
  known = sorted(set(known))
  close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.4)
  hint = f" Did you mean {', '.join(close)}?" if close else ""
  return f"Unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}."


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
  """An ``UnknownNameError`` with ``unknown_name_message``'s text (to ``raise``)."""
  return UnknownNameError(unknown_name_message(kind, name, known))


class Registry(Generic[T]):
  """A mapping from names to objects (classes, factories, specs) of one kind.

  ``get`` of an unknown name raises ``UnknownNameError`` listing close matches and
  every registered name; registering a taken name raises ``DuplicateNameError``
  unless it is the very same object (so re-importing a module is harmless) or
  ``overwrite=True``.

  Example::

    OPTIMIZERS = Registry("optimizer")
    OPTIMIZERS.register("sgd", make_sgd)

    @OPTIMIZERS.register("adam")
    def make_adam(): ...

    OPTIMIZERS.get("adma")  # UnknownNameError: ... Did you mean adam? Known: adam, sgd.
  """

  def __init__(self, kind: str):
    """``kind``: what the entries are, singular, for messages (``"task family"``)."""
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str, obj: Optional[T] = None, *, overwrite: bool = False):
    """Registers ``obj`` as ``name`` and returns it; without ``obj``, a decorator."""
    if obj is None:
      return lambda o: self.register(name, o, overwrite=overwrite)
    if not isinstance(name, str) or not name:
      raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")
    if name in self._entries and self._entries[name] is not obj and not overwrite:
      raise DuplicateNameError(f"{self.kind.capitalize()} {name!r} is already registered "
                               "(pass overwrite=True to replace it).")
    self._entries[name] = obj
    return obj

  def get(self, name: str) -> T:
    """The object registered as ``name``."""
    if name not in self._entries:
      raise unknown_name_error(self.kind, name, self._entries)
    return self._entries[name]

  def unregister(self, name: str) -> T:
    """Removes ``name`` and returns its object (unknown names raise, as in ``get``)."""
    obj = self.get(name)
    del self._entries[name]
    return obj

  def names(self) -> List[str]:
    """Registered names, sorted."""
    return sorted(self._entries)

  def __contains__(self, name) -> bool:
    return name in self._entries

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self):
    return f"Registry({self.kind!r}, {len(self)} entries)"


TASKS: Registry[Callable[[], Task]] = Registry("task")
FAMILIES: Registry[Callable[[], TaskFamily]] = Registry("task family")


def register_task(name: str, factory: Callable[[], Task]) -> None:
  """Registers a zero-argument factory building the task ``name`` lazily."""
  TASKS.register(name, factory)


def register_family(name: str, factory: Callable[[], TaskFamily]) -> None:
  """Registers a zero-argument factory building the task family ``name`` lazily."""
  FAMILIES.register(name, factory)


def unregister_task(name: str) -> None:
  """Removes the task ``name`` (tests registering temporary tasks clean up with it)."""
  TASKS.unregister(name)


def get(name: str) -> Task:
  """The task registered as ``name`` (built on each call; cheap, data is cached)."""
  if name in FAMILIES and name not in TASKS:
    raise UnknownNameError(f"{name!r} is a task family, not a task: use "
                           f"tasks.get_family({name!r}).")
  return TASKS.get(name)()


def get_family(name: str) -> TaskFamily:
  """The task family registered as ``name`` (built on each call)."""
  if name in TASKS and name not in FAMILIES:
    raise UnknownNameError(f"{name!r} is a task, not a task family: use tasks.get({name!r}).")
  return FAMILIES.get(name)()


def task_names() -> List[str]:
  return TASKS.names()


def family_names() -> List[str]:
  return FAMILIES.names()


def names() -> List[str]:
  """All registered task and family names."""
  return sorted(set(TASKS.names()) | set(FAMILIES.names()))
