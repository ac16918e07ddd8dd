"""Checkpoints of pytrees of arrays with orbax-checkpoint, checked on restore.

Layout (orbax's ``CheckpointManager``): ``<dir>/<step>/{state, meta}``. ``state`` holds
the arrays (sharded ``jax.Array``s are written by the processes that own their
shards: every process of a multi-host job calls ``save`` and ``restore``); ``meta`` is
JSON: the caller's metadata (config fingerprint, architecture...), the tree structure
and one checksum per leaf.

Guarantees:

* atomic: orbax writes a step into a temporary directory and renames it when
  complete, so a job killed while saving leaves the previous checkpoints intact;
  temporary directories left by a kill are removed when the directory is opened;
* the newest ``keep`` checkpoints are kept;
* ``restore`` refuses, with a message saying what differs and how to proceed, a
  checkpoint written by another configuration (``expect``) or with another state
  structure; a checkpoint that cannot be read or whose contents fail the checksum is
  moved aside (``<dir>/corrupt_<step>``) with a warning and the next older one is
  used.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# Orbax logs every save at INFO through absl; keep the progress bar readable.
logging.getLogger("absl").setLevel(logging.WARNING)


class CheckpointError(RuntimeError):
  """A checkpoint does not match the run restoring it (or none is readable)."""


@jax.jit
def _checksums(leaves: List[jax.Array]) -> jax.Array:
  """(L,) uint32 position-weighted sums of each leaf's bits (mod 2^32): any single
  flipped bit or swapped pair of values changes them. Global reductions, so sharded
  arrays of a multi-host job give every process the same numbers."""

  def one(x):
    x = jnp.ravel(x)
    if x.dtype == jnp.bool_:
      bits = x.astype(jnp.uint32)
    elif x.dtype.itemsize == 1:  # uint8 images, int8
      bits = jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    elif x.dtype.itemsize == 4:
      bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif x.dtype.itemsize == 2:
      bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    else:  # 8-byte leaves (x64 mode): both halves.
      bits = jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    weights = 2 * jnp.arange(bits.size, dtype=jnp.uint32) + 1
    return jnp.sum(bits * weights, dtype=jnp.uint32)

  return jnp.stack([one(x) for x in leaves]) if leaves else jnp.zeros((0,), jnp.uint32)


def checksum_list(tree) -> List[int]:
  """One uint32 checksum per leaf of ``tree`` (the ones checkpoints carry)."""
  leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
  return [int(v) for v in np.asarray(_checksums(leaves))]


def _manager(directory: str, keep: Optional[int] = None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("state", "meta"))


def all_steps(directory: str) -> List[int]:
  """Steps of the complete checkpoints in ``directory``, ascending."""
  if not os.path.isdir(directory):
    return []
  manager = _manager(directory)
  try:
    return sorted(int(s) for s in manager.all_steps())
  finally:
    manager.close()


def latest_step(directory: str) -> Optional[int]:
  steps = all_steps(directory)
  return steps[-1] if steps else None


def save(directory: str, step: int, tree: Any, metadata: Optional[Dict[str, Any]] = None,
         keep: int = 3) -> str:
  """Writes ``tree`` (a pytree of arrays) as the checkpoint of ``step``; returns its path.

  Args:
    directory: checkpoint directory (created).
    step: step number.
    tree: pytree of numpy or jax arrays (sharded global arrays allowed; then every
      process must call ``save``).
    metadata: JSON-serializable dict stored alongside (checked by ``restore``).
    keep: number of newest checkpoints to keep.
  """
  tree = jax.tree_util.tree_map(jnp.asarray, tree)
  leaves = jax.tree_util.tree_leaves(tree)
  meta = {"step": int(step), "treedef": str(jax.tree_util.tree_structure(tree)),
          "shapes": [list(x.shape) for x in leaves], "dtypes": [str(x.dtype) for x in leaves],
          "checksums": checksum_list(tree), "metadata": metadata or {}}
  with _quiet_orbax() as dropped:
    before = set(threading.enumerate())
    try:
      manager = _manager(directory, keep)
      try:
        if int(step) in manager.all_steps():  # Rewriting a step (a resumed run's last one).
          manager.delete(int(step))
        manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                        meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()
      finally:
        manager.close()
    except Exception as e:  # pylint: disable=broad-except  (disk full, read-only, gone)
      for thread in set(threading.enumerate()) - before:  # orbax's clean-up of its
        try:                                              # temporaries, before exit.
          thread.join(timeout=10.0)
        except Exception:  # pylint: disable=broad-except  (orbax's threads re-raise)
          pass
      _wait_until_quiet(dropped)
      dropped.clear()
      _drop_orphaned_save_errors()
      raise CheckpointError(
          f"could not write the checkpoint of step {int(step)} to {directory} "
          f"({_short(e)}). The checkpoints written before are intact: free disk space or "
          f"fix the directory, then re-run the same command to resume.") from e
  return os.path.join(os.path.abspath(directory), str(int(step)))


def _short(e: BaseException) -> str:
  """The innermost cause of ``e`` in one line (orbax wraps OS errors); a full disk
  is said first (tensorstore's message buries it)."""
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  text = " ".join(str(e).split()) or type(e).__name__
  full = (getattr(e, "errno", None) == errno.ENOSPC or "No space left" in text
          or "RESOURCE_EXHAUSTED" in text)
  text = text if len(text) <= 200 else text[:200] + "..."
  return f"no space left on device: {text}" if full else text


def _is_not_orphaned_save_error(record: logging.LogRecord) -> bool:
  """False for asyncio's "exception was never retrieved" report of a future of a failed
  save (logged whenever the garbage collector meets it)."""
  text = record.getMessage()
  if "exception was never retrieved" not in text:
    return True
  detail = f"{text} {record.exc_info[1]!r}" if record.exc_info else text
  return not any(mark in detail for mark in ("orbax", "RESOURCE_EXHAUSTED", "No space left"))


def _drop_orphaned_save_errors() -> None:
  """After a failed save: asyncio no longer logs its futures' errors (each is in the
  ``CheckpointError``); other asyncio records pass."""
  logger = logging.getLogger("asyncio")
  if _is_not_orphaned_save_error not in logger.filters:
    logger.addFilter(_is_not_orphaned_save_error)


def _wait_until_quiet(captured: "_Captured", period_s: float = 0.5,
                     limit_s: float = 5.0) -> None:
  """Waits (at most ``limit_s``) until ``captured`` received nothing for ``period_s``:
  tensorstore's writer threads of a failed save report late, from C++ threads that
  cannot be joined."""
  deadline = time.monotonic() + limit_s
  seen = -1
  while time.monotonic() < deadline and len(captured.text) + len(captured.records) != seen:
    seen = len(captured.text) + len(captured.records)
    time.sleep(period_s)


class _Captured(logging.Handler):
  """Keeps log records and text written to stderr instead of printing them."""

  def __init__(self):
    super().__init__()
    self.records: List[logging.LogRecord] = []
    self.text: List[str] = []

  def emit(self, record):
    self.records.append(record)

  def write(self, text: str) -> int:
    self.text.append(text)
    return len(text)

  def flush(self):
    pass

  def clear(self):
    self.records.clear()
    self.text.clear()


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[_Captured]:
  """Holds back orbax's (absl's) log records and what is printed to ``sys.stderr``
  while saving (tensorstore's writer threads print a traceback per array when a
  failed save's event loop is closed under them), so that a failed save is one
  ``CheckpointError`` line (the caller clears them); a successful save's output is
  passed on."""
  logger = logging.getLogger("absl")
  captured, handlers, propagate = _Captured(), list(logger.handlers), logger.propagate
  for h in handlers:
    logger.removeHandler(h)
  logger.addHandler(captured)
  logger.propagate = False
  stderr, sys.stderr = sys.stderr, captured
  try:
    yield captured
  finally:
    sys.stderr = stderr
    logger.removeHandler(captured)
    for h in handlers:
      logger.addHandler(h)
    logger.propagate = propagate
    for record in captured.records:
      logger.handle(record)
    if captured.text:
      stderr.write("".join(captured.text))


def read_metadata(directory: str, step: Optional[int] = None) -> Dict[str, Any]:
  """The ``meta`` item of a checkpoint (latest by default)."""
  step = latest_step(directory) if step is None else step
  if step is None:
    raise CheckpointError(f"No checkpoint in {directory!r}.")
  manager = _manager(directory)
  try:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  finally:
    manager.close()


def _abstract(target):
  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype if sharding is None
                                else x.dtype, sharding=sharding)
  return jax.tree_util.tree_map(one, target)


def _restore_step(manager, directory: str, step: int, target, expect, check
                  ) -> Tuple[Any, Dict]:
  """One step; raises CheckpointError for a mismatch and other errors for corruption."""
  where = os.path.join(directory, str(step))
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  fresh_hint = (f"Use a new run directory (or delete {directory!r}) to start over, or "
                f"run with the configuration that wrote it.")
  if check is not None:
    check(where, meta)
  for key, value in (expect or {}).items():
    found = meta["metadata"].get(key)
    if found != value:
      raise CheckpointError(
          f"Checkpoint {where!r} was written with {key}={found!r}, but this run has "
          f"{key}={value!r}. {fresh_hint}")
  if meta["treedef"] != str(jax.tree_util.tree_structure(target)):
    raise CheckpointError(
        f"Checkpoint {where!r} holds a different state structure than this run expects "
        f"(different architecture, estimator or config?). {fresh_hint}")
  abstract = _abstract(target)
  for i, (shape, dtype, t) in enumerate(zip(meta["shapes"], meta["dtypes"],
                                            jax.tree_util.tree_leaves(abstract))):
    if tuple(shape) != tuple(t.shape) or np.dtype(dtype) != np.dtype(t.dtype):
      raise CheckpointError(
          f"Checkpoint {where!r}: leaf {i} has shape {tuple(shape)} {dtype}, this run "
          f"expects {tuple(t.shape)} {np.dtype(t.dtype)}. {fresh_hint}")
  tree = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
  if checksum_list(tree) != meta["checksums"]:
    raise ValueError("its arrays fail the checksum")
  return tree, meta


def restore(directory: str, target: Any, step: Optional[int] = None,
            expect: Optional[Dict[str, Any]] = None,
            check: Optional[Callable[[str, Dict[str, Any]], None]] = None
            ) -> Tuple[Any, Dict[str, Any]]:
  """Reads a checkpoint into the structure (and shardings) of ``target``.

  Args:
    directory: checkpoint directory.
    target: pytree with the expected structure, shapes and dtypes (arrays or
      ``jax.ShapeDtypeStruct``; a ``sharding`` on them places the restored arrays).
    step: which checkpoint; default: the newest readable one (corrupt newer ones are
      moved aside to ``<dir>/corrupt_<step>`` with a warning).
    expect: metadata entries that must match (e.g. config fingerprint, arch).
    check: ``check(checkpoint path, meta)`` raising ``CheckpointError`` to refuse a
      checkpoint (e.g. a field-by-field comparison of the recorded configuration).

  Returns:
    ``(tree, meta)``: the restored pytree of ``jax.Array`` and the checkpoint's
    metadata (``meta["metadata"]`` is what ``save`` was given).

  Raises:
    CheckpointError: a mismatch with ``expect`` or ``target``, no checkpoint, or
      ``step`` given and unreadable.
  """
  manager = _manager(directory)
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    raise CheckpointError(f"No checkpoint in {directory!r}.")
  try:
    for s in steps:
      try:
        return _restore_step(manager, directory, s, target, expect, check)
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        where = os.path.join(directory, str(s))
        if step is not None:
          raise CheckpointError(f"Checkpoint {where!r} is corrupt ({e}).") from e
        aside = os.path.join(directory, f"corrupt_{s}")
        if jax.process_index() == 0:
          shutil.rmtree(aside, ignore_errors=True)
          os.replace(where, aside)
        warnings.warn(f"Checkpoint {where!r} is corrupt ({e}); moved it to {aside!r} and "
                      f"resuming from the previous checkpoint.", stacklevel=2)
        manager.reload()
    raise CheckpointError(f"No readable checkpoint in {directory!r} (corrupt ones were "
                          f"moved aside to corrupt_<step>); start a fresh run directory.")
  finally:
    manager.close()
