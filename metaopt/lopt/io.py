"""Save and load learned optimizers as single portable files (no pickle).

A file is a safetensors file: the arrays of ``theta`` (one tensor per leaf, named by
its pytree path, e.g. ``layers/0/w``) plus a JSON header stored in the safetensors
metadata under the key ``"metaopt"``::

    {"format_version": 1, "arch": "mlp", "config": {...MLPConfig fields...},
     "metadata": {"trained_on": [...], "meta_training_device_hours": 1.5,
                  "description": "...", "license": "Apache-2.0", ...free keys...}}

``load("name")`` resolves a bare name (no path separator, no ``.safetensors``
suffix) to the shipped ``metaopt/pretrained/<name>.safetensors`` only, so a file or
folder in the working directory can never shadow a shipped optimizer; anything with
a path separator or ending in ``.safetensors`` is a path (``./general-v2`` for a
local file with a bare name). Only regular files are read (a FIFO would block).
Writes are atomic (temporary file + ``os.replace``).

Every check of a file raises ``LoptFileError`` naming the file: the header (JSON
nested at most ``MAX_HEADER_DEPTH`` deep; ``arch`` a string; ``config`` an object of
the architecture's fields with their types, finite numbers, integer sizes and counts
>= 1; ``metadata`` an object whose standard keys have their types) and the tensors
(names and shapes of the architecture, its dtypes, finite values).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import pathlib
import stat
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np
import optax
import safetensors
import safetensors.numpy

from metaopt import typed_config
from metaopt.lopt import base

#: Version of the file layout written by ``save``; ``load`` refuses newer ones.
FORMAT_VERSION = 1
HEADER_KEY = "metaopt"
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained"
#: Metadata keys every file carries (``None`` when unknown); others may be added.
STANDARD_METADATA = ("trained_on", "meta_training_device_hours", "description", "license")
#: Deepest nesting of lists/objects read from a header (a shipped header has 4).
MAX_HEADER_DEPTH = 32


class LoptFileError(ValueError):
  """A learned-optimizer file cannot be used (corrupt, newer, wrong architecture)."""


def _key_name(k) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flatten_named(tree) -> Dict[str, Any]:
  """``{"a/0/w": leaf, ...}``: leaves of ``tree`` named by their paths."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def pretrained_names():
  """Names of the optimizers shipped in ``metaopt/pretrained``."""
  return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def is_path(path_or_name) -> bool:
  """True when ``path_or_name`` is a file path (a path separator, or the
  ``.safetensors`` suffix); otherwise it is a shipped optimizer's name."""
  s = os.fspath(path_or_name)
  return (os.sep in s or "/" in s or bool(os.altsep and os.altsep in s)
          or s.endswith(".safetensors"))


def resolve(path_or_name) -> pathlib.Path:
  """A path as given, or a shipped name -> its file (unknown names list known ones).

  A bare name is a shipped name only: a local file or folder called ``general-v2``
  does not shadow the shipped optimizer (pass ``./general-v2`` to read it)."""
  s = os.fspath(path_or_name)
  if is_path(s):
    if not os.path.exists(s):
      raise FileNotFoundError(f"No learned-optimizer file at {s!r}.")
    if os.path.isdir(s):
      inside = sorted(p.name for p in pathlib.Path(s).glob("*.safetensors"))
      hint = (f" It holds: {', '.join(inside[:5])}." if inside
              else " It holds no .safetensors file.")
      raise LoptFileError(f"{s} is a directory, not a learned-optimizer file; pass the "
                          f".safetensors file itself.{hint}")
    if not stat.S_ISREG(os.stat(s).st_mode):
      raise LoptFileError(f"{s} is not a regular file (a FIFO, socket or device); pass a "
                          ".safetensors file written by metaopt.lopt.io.save.")
    return pathlib.Path(s)
  path = PRETRAINED_DIR / f"{s}.safetensors"
  if not path.exists():
    known = ", ".join(pretrained_names()) or "(none shipped yet)"
    local = (f" A local {s!r} exists: bare names mean shipped optimizers, so pass it as "
             f"a path, ./{s}." if os.path.exists(s) else "")
    raise KeyError(f"Unknown pretrained learned optimizer {s!r}. Shipped: {known}. "
                   f"To load a file, pass its path (ending in .safetensors).{local}")
  return path


def save(path, lopt: base.LearnedOptimizer, theta, metadata: Optional[Mapping[str, Any]] = None):
  """Writes ``theta`` and ``lopt``'s architecture config to ``path`` atomically.

  Args:
    path: destination (conventionally ``*.safetensors``); parent dirs are created.
    lopt: the architecture whose ``init_meta_params`` structure ``theta`` has.
    theta: meta-parameters (arrays; converted to numpy).
    metadata: JSON-serializable free metadata; ``STANDARD_METADATA`` keys default to
      ``None``.
  Returns:
    The path written.
  """
  _check_structure(lopt, theta, "theta passed to save")
  meta = {k: None for k in STANDARD_METADATA}
  meta.update(dict(metadata or {}))
  header = {"format_version": FORMAT_VERSION, "arch": lopt.arch,
            "config": base.config_to_dict(lopt.config), "metadata": meta}
  try:
    header_json = json.dumps(header)
  except TypeError as e:
    raise TypeError(f"metadata must be JSON-serializable: {e}") from e
  # np.array (not ascontiguousarray, which promotes 0-d to 1-d) keeps scalar shapes.
  tensors = {k: np.array(v, order="C") for k, v in flatten_named(theta).items()}
  data = safetensors.numpy.save(tensors, metadata={HEADER_KEY: header_json})
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; weights are meant to be shared.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def remove_stale_temporaries(path) -> List[str]:
  """Deletes the temporary files that a ``save`` to ``path`` killed before its rename
  left beside it; returns their paths."""
  path = pathlib.Path(path)
  stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
  for tmp in stale:
    tmp.unlink(missing_ok=True)
  return [str(t) for t in stale]


def _read(path: pathlib.Path) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
  try:
    with safetensors.safe_open(str(path), framework="numpy") as f:
      raw = f.metadata() or {}
      tensors = {k: f.get_tensor(k) for k in f.keys()}
  except Exception as e:  # safetensors raises its own error types for bad bytes
    raise LoptFileError(f"{path} is truncated or corrupt (not a readable safetensors "
                        f"file: {e}). Re-download or re-save it.") from e
  if HEADER_KEY not in raw:
    raise LoptFileError(f"{path} is a safetensors file but not a metaopt learned "
                        f"optimizer (no {HEADER_KEY!r} header). Save it with "
                        f"metaopt.lopt.io.save.")
  try:
    header = json.loads(raw[HEADER_KEY])
  except RecursionError:
    raise LoptFileError(f"{path} has a corrupt metaopt header: its JSON is nested too "
                        "deeply to read. Re-save it with metaopt.lopt.io.save.") from None
  except ValueError as e:
    raise LoptFileError(f"{path} has a corrupt metaopt header ({e!r}).") from e
  if _depth(header) > MAX_HEADER_DEPTH:
    raise LoptFileError(f"{path} has a corrupt metaopt header: JSON nested deeper than "
                        f"{MAX_HEADER_DEPTH} levels. Re-save it with metaopt.lopt.io.save.")
  try:
    version = int(header["format_version"])
    arch, config = header["arch"], header["config"]
  except (ValueError, KeyError, TypeError, OverflowError) as e:
    raise LoptFileError(f"{path} has a corrupt metaopt header ({e!r}).") from e
  if not isinstance(arch, str):
    raise LoptFileError(f"{path} has a corrupt metaopt header: arch must be a string, "
                        f"got {_shown(arch)}.")
  if not isinstance(config, dict):
    raise LoptFileError(f"{path} has a corrupt metaopt header: config must be a JSON "
                        f"object, got {_shown(config)}.")
  metadata = header.get("metadata", {})
  if not isinstance(metadata, dict):
    raise LoptFileError(f"{path} has a corrupt metaopt header: metadata must be a JSON "
                        f"object, got {_shown(metadata)}.")
  _check_metadata(metadata, path)
  if version < 1:
    raise LoptFileError(f"{path} declares file format version {version}; versions start "
                        "at 1, so the header is corrupt. Re-save it with "
                        "metaopt.lopt.io.save.")
  if version > FORMAT_VERSION:
    raise LoptFileError(f"{path} uses file format version {version}, newer than this "
                        f"metaopt understands ({FORMAT_VERSION}). Upgrade metaopt "
                        f"(pip install -U metaopt-jax).")
  return {"arch": arch, "config": config, "metadata": metadata}, tensors


def _shown(value: Any) -> str:
  """``repr`` of a header value, cut to 80 characters."""
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _depth(value: Any) -> int:
  """Nesting depth of a parsed JSON value (iterative: no recursion limit)."""
  deepest, stack = 0, [(value, 1)]
  while stack:
    node, depth = stack.pop()
    if isinstance(node, (dict, list)):
      deepest = max(deepest, depth)
      if depth <= MAX_HEADER_DEPTH:
        stack.extend((child, depth + 1) for child in
                     (node.values() if isinstance(node, dict) else node))
  return deepest


def _check_metadata(metadata: Dict[str, Any], path) -> None:
  """The standard metadata keys have their types (other tools read them)."""
  problems = []
  trained_on = metadata.get("trained_on")
  if trained_on is not None and not (isinstance(trained_on, list)
                                     and all(isinstance(n, str) for n in trained_on)):
    problems.append(f"trained_on must be a list of task or family names, got "
                    f"{_shown(trained_on)}")
  hours = metadata.get("meta_training_device_hours")
  if hours is not None and (isinstance(hours, bool) or not isinstance(hours, numbers.Real)
                            or not math.isfinite(hours) or hours < 0):
    problems.append(f"meta_training_device_hours must be a finite number >= 0, got "
                    f"{_shown(hours)}")
  for key in ("description", "license"):
    if metadata.get(key) is not None and not isinstance(metadata[key], str):
      problems.append(f"{key} must be a string, got {_shown(metadata[key])}")
  if problems:
    raise LoptFileError(f"{path} has malformed metadata: {'; '.join(problems)}. Fix the "
                        "header or re-save the file with metaopt.lopt.io.save.")


def _check_config_values(config: Any, path) -> None:
  """Numbers of an architecture config: finite, and integers (sizes, counts) >= 1."""
  problems = []
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, bool):
        continue
      if isinstance(v, float) and not math.isfinite(v):
        problems.append(f"{f.name}={value!r} is not finite")
      elif isinstance(v, int) and v < 1:
        problems.append(f"{f.name}={value!r}: sizes and counts must be >= 1")
  if problems:
    raise LoptFileError(f"{path} has an invalid config: {'; '.join(problems)}. Fix the "
                        "header or re-save the file with metaopt.lopt.io.save.")


def _check_structure(lopt, theta, what: str):
  """Raises naming every missing/unexpected tensor and every shape mismatch."""
  expected = {k: tuple(v.shape) for k, v in
              flatten_named(jax.eval_shape(lopt.init_meta_params, jax.random.PRNGKey(0))).items()}
  got = {k: tuple(np.shape(v)) for k, v in flatten_named(theta).items()}
  problems = []
  for k in sorted(set(expected) - set(got)):
    problems.append(f"missing tensor {k!r} (expected shape {expected[k]})")
  for k in sorted(set(got) - set(expected)):
    problems.append(f"unexpected tensor {k!r} (shape {got[k]})")
  for k in sorted(set(expected) & set(got)):
    if expected[k] != got[k]:
      problems.append(f"tensor {k!r} has shape {got[k]} but architecture {lopt.arch!r} "
                      f"with this config expects {expected[k]}")
  if problems:
    raise LoptFileError(f"The {what} does not match {lopt!r}: " + "; ".join(problems) +
                        ". Was it written for another architecture or config?")


def _check_dtypes(lopt, tensors: Dict[str, np.ndarray], path) -> None:
  """Each tensor has the dtype of the architecture's (an int or bool tensor where a
  float one belongs would skip the finite check and change the arithmetic)."""
  expected = {k: np.dtype(v.dtype) for k, v in
              flatten_named(jax.eval_shape(lopt.init_meta_params, jax.random.PRNGKey(0))).items()}
  bad = [f"{k!r} is {np.asarray(t).dtype}, expected {expected[k]}"
         for k, t in sorted(tensors.items()) if np.asarray(t).dtype != expected[k]]
  if bad:
    raise LoptFileError(f"{path} holds tensors of the wrong dtype: {'; '.join(bad)}. "
                        "Re-save it with metaopt.lopt.io.save.")


def _check_finite(tensors: Dict[str, np.ndarray], path) -> None:
  """Refuses weights with NaN or infinite entries (a diverged meta-training saved):
  such an optimizer would silently produce NaN updates."""
  bad = []
  for name, t in sorted(tensors.items()):
    arr = np.asarray(t)
    if np.issubdtype(arr.dtype, np.inexact):
      n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
      if n:
        bad.append(f"{name!r} ({n} of {arr.size})")
  if bad:
    raise LoptFileError(f"{path} holds non-finite weights (NaN or inf) in tensor(s) "
                        f"{', '.join(bad)}; it was saved from a diverged meta-training. "
                        "Use an earlier checkpoint or re-train.")


def load_meta_params(path_or_name, arch: Optional[str] = None):
  """Reads a file: ``(lopt, theta, metadata)``, theta as a pytree of numpy arrays with
  the structure of ``lopt.init_meta_params``. ``arch``, if given, must match."""
  path = resolve(path_or_name)
  header, tensors = _read(path)
  try:
    # Type-check the header's config first: a wrongly typed field would otherwise fail
    # (or not) somewhere inside the architecture.
    checked = typed_config.from_dict(base.ARCHS.get(header["arch"]).Config, header["config"])
  except (KeyError, ValueError, TypeError) as e:
    raise LoptFileError(f"{path} names architecture {header['arch']!r} with config "
                        f"{_shown(header['config'])}, which this metaopt cannot build: {e} "
                        "Re-save the file with metaopt.lopt.io.save.") from e
  _check_config_values(checked, path)
  try:
    lopt = base.build(header["arch"], header["config"])
  except (KeyError, ValueError, TypeError) as e:
    raise LoptFileError(f"{path} names architecture {header['arch']!r} with config "
                        f"{_shown(header['config'])}, which this metaopt cannot build: {e} "
                        "Re-save the file with metaopt.lopt.io.save.") from e
  if arch is not None and arch != lopt.arch:
    raise LoptFileError(f"{path} holds a {lopt.arch!r} learned optimizer, not {arch!r}.")
  _check_structure(lopt, tensors, f"file {path}")
  _check_dtypes(lopt, tensors, path)
  _check_finite(tensors, path)
  template = jax.eval_shape(lopt.init_meta_params, jax.random.PRNGKey(0))
  names = list(flatten_named(template))
  theta = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template),
                                       [tensors[k] for k in names])
  return lopt, theta, header["metadata"]


def load(path_or_name, num_steps: Optional[int] = None, param_info: Any = None):
  """A learned optimizer file or shipped name -> ``optax.GradientTransformationExtraArgs``.

  Args:
    path_or_name: a ``.safetensors`` path or a name from ``pretrained_names()``.
    num_steps: training horizon for architectures that use it (``None``: horizon-free;
      otherwise an integer >= 1).
    param_info: pytree of ``tasks.ParamInfo`` (required by μP architectures).

  The transformation's ``init`` refuses parameters without any array (``{}``).
  """
  if num_steps is not None and (isinstance(num_steps, bool)
                                or not isinstance(num_steps, numbers.Integral)
                                or num_steps < 1):
    raise ValueError(f"num_steps must be None (no horizon) or an integer >= 1, the number "
                     f"of training steps; got {num_steps!r}.")
  lopt, theta, _ = load_meta_params(path_or_name)
  return refuse_empty_params(lopt.transform(theta, num_steps=num_steps,
                                            param_info=param_info))


def refuse_empty_params(opt: optax.GradientTransformation) -> optax.GradientTransformation:
  """``opt`` whose ``init`` raises a clear ``ValueError`` for parameters without any
  array (``{}``, an empty list) instead of failing inside the optimizer."""
  def init(params):
    if not jax.tree_util.tree_leaves(params):
      raise ValueError(f"the optimizer was given parameters without any array "
                       f"({params!r}); pass the model's parameters (a pytree of arrays, "
                       "e.g. the output of model.init).")
    return opt.init(params)

  if isinstance(opt, optax.GradientTransformationExtraArgs):
    return optax.GradientTransformationExtraArgs(init, opt.update)
  return optax.GradientTransformation(init, opt.update)
