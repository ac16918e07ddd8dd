"""Atomic checkpoints of pytrees of arrays, with a config check on restore.

Layout: ``<dir>/step_<step:09d>/{arrays.npz, meta.json}``. A checkpoint is written to
a temporary directory and renamed into place (``os.replace`` of a directory is atomic
on POSIX), so a job killed while saving leaves the previous checkpoints intact; only
the newest ``keep`` are kept. ``meta.json`` records the tree structure, shapes,
dtypes, a SHA-256 of the arrays file and caller metadata (e.g. a config
fingerprint and the optimizer architecture); ``restore`` refuses a corrupt file or a
checkpoint whose structure or metadata differ from what the caller expects, with a
message that says what differs and how to proceed.

Arrays are plain numpy on the host: a multi-host caller gathers its global arrays
first and lets process 0 write (see ``metaopt.meta.trainer``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

_STEP_DIR = re.compile(r"^step_(\d{9})$")


class CheckpointError(RuntimeError):
  """A checkpoint is corrupt or does not match the run restoring it."""


def _step_dir(directory: str, step: int) -> str:
  return os.path.join(directory, f"step_{step:09d}")


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _fsync_file(path: str) -> None:
  with open(path, "rb") as f:
    os.fsync(f.fileno())


def all_steps(directory: str) -> List[int]:
  """Steps of the complete checkpoints in ``directory``, ascending."""
  if not os.path.isdir(directory):
    return []
  steps = [int(m.group(1)) for m in map(_STEP_DIR.match, os.listdir(directory)) if m]
  return sorted(steps)


def latest_step(directory: str) -> Optional[int]:
  steps = all_steps(directory)
  return steps[-1] if steps else None


def save(directory: str, step: int, tree: Any, metadata: Optional[Dict[str, Any]] = None,
         keep: int = 3) -> str:
  """Writes ``tree`` (a pytree of arrays) as the checkpoint of ``step``; returns its path.

  Args:
    directory: checkpoint directory (created).
    step: step number (the directory name).
    tree: pytree of arrays (numpy or fully addressable jax arrays).
    metadata: JSON-serializable dict stored alongside (checked by ``restore``).
    keep: number of newest checkpoints to keep.
  """
  os.makedirs(directory, exist_ok=True)
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  arrays = [np.asarray(x) for x in leaves]
  tmp = os.path.join(directory, f".tmp_step_{step:09d}_{os.getpid()}")
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  array_path = os.path.join(tmp, "arrays.npz")
  np.savez(array_path, **{f"a{i}": a for i, a in enumerate(arrays)})
  _fsync_file(array_path)
  meta = {
      "step": int(step),
      "treedef": str(treedef),
      "shapes": [list(a.shape) for a in arrays],
      "dtypes": [str(a.dtype) for a in arrays],
      "sha256": _sha256(array_path),
      "metadata": metadata or {},
  }
  meta_path = os.path.join(tmp, "meta.json")
  with open(meta_path, "w") as f:
    json.dump(meta, f, indent=1, default=str)
    f.flush()
    os.fsync(f.fileno())
  final = _step_dir(directory, step)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.replace(tmp, final)
  for old in all_steps(directory)[:-keep] if keep > 0 else []:
    shutil.rmtree(_step_dir(directory, old), ignore_errors=True)
  return final


def read_metadata(directory: str, step: Optional[int] = None) -> Dict[str, Any]:
  """The ``meta.json`` of a checkpoint (latest by default)."""
  step = latest_step(directory) if step is None else step
  if step is None:
    raise CheckpointError(f"No checkpoint in {directory!r}.")
  path = os.path.join(_step_dir(directory, step), "meta.json")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(
        f"Checkpoint {path!r} is corrupt ({e}). Delete {_step_dir(directory, step)!r} to "
        f"resume from the previous checkpoint, or start a fresh run directory.") from e


def restore(directory: str, target: Any, step: Optional[int] = None,
            expect: Optional[Dict[str, Any]] = None) -> Tuple[Any, Dict[str, Any]]:
  """Reads a checkpoint into the structure of ``target`` (numpy leaves).

  Args:
    directory: checkpoint directory.
    target: pytree with the expected structure, shapes and dtypes (arrays or
      ``jax.ShapeDtypeStruct``).
    step: which checkpoint (latest by default).
    expect: metadata entries that must match (e.g. config fingerprint, arch).

  Returns:
    ``(tree, meta)``: the restored pytree and the checkpoint's ``meta.json``.

  Raises:
    CheckpointError: corrupt file or structure/metadata mismatch.
  """
  meta = read_metadata(directory, step)
  step = meta["step"]
  where = _step_dir(directory, step)
  fresh_hint = (f"Use a new run directory (or delete {directory!r}) to start over, or "
                f"run with the configuration that wrote it.")
  for key, value in (expect or {}).items():
    found = meta["metadata"].get(key)
    if found != value:
      raise CheckpointError(
          f"Checkpoint {where!r} was written with {key}={found!r}, but this run has "
          f"{key}={value!r}. {fresh_hint}")
  leaves, treedef = jax.tree_util.tree_flatten(target)
  if meta["treedef"] != str(treedef):
    raise CheckpointError(
        f"Checkpoint {where!r} holds a different state structure than this run expects "
        f"(different architecture, estimator or config?). {fresh_hint}")
  array_path = os.path.join(where, "arrays.npz")
  if not os.path.exists(array_path) or _sha256(array_path) != meta["sha256"]:
    raise CheckpointError(
        f"Checkpoint {where!r} is corrupt (arrays.npz missing or its checksum differs). "
        f"Delete that directory to resume from the previous checkpoint.")
  with np.load(array_path) as npz:
    arrays = [npz[f"a{i}"] for i in range(len(leaves))]
  for i, (a, t) in enumerate(zip(arrays, leaves)):
    if tuple(a.shape) != tuple(np.shape(t)) or a.dtype != np.dtype(t.dtype):
      raise CheckpointError(
          f"Checkpoint {where!r}: leaf {i} has shape {a.shape} {a.dtype}, this run expects "
          f"{tuple(np.shape(t))} {np.dtype(t.dtype)}. {fresh_hint}")
  return jax.tree_util.tree_unflatten(treedef, arrays), meta
