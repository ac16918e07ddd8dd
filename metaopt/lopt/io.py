"""Save and load learned optimizers as single portable files (no pickle).

A file is a safetensors file: the arrays of ``theta`` (one tensor per leaf, named by
its pytree path, e.g. ``layers/0/w``) plus a JSON header stored in the safetensors
metadata under the key ``"metaopt"``::

    {"format_version": 1, "arch": "mlp", "config": {...MLPConfig fields...},
     "metadata": {"trained_on": [...], "meta_training_device_hours": 1.5,
                  "description": "...", "license": "Apache-2.0", ...free keys...}}

``load("name")`` resolves shipped names to ``metaopt/pretrained/<name>.safetensors``;
anything containing a path separator or ending in ``.safetensors`` is a path.
Writes are atomic (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np
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


def resolve(path_or_name) -> pathlib.Path:
  """A path as given, or a shipped name -> its file (unknown names list known ones)."""
  s = os.fspath(path_or_name)
  if os.sep in s or "/" in s or s.endswith(".safetensors") or os.path.exists(s):
    if not os.path.exists(s):
      raise FileNotFoundError(f"No learned-optimizer file at {s!r}.")
    if os.path.isdir(s):
      inside = sorted(p.name for p in pathlib.Path(s).glob("*.safetensors"))
      hint = (f" It holds: {', '.join(inside[:5])}." if inside
              else " It holds no .safetensors file.")
      raise LoptFileError(f"{s} is a directory, not a learned-optimizer file; pass the "
                          f".safetensors file itself.{hint}")
    return pathlib.Path(s)
  path = PRETRAINED_DIR / f"{s}.safetensors"
  if not path.exists():
    known = ", ".join(pretrained_names()) or "(none shipped yet)"
    raise KeyError(f"Unknown pretrained learned optimizer {s!r}. Shipped: {known}. "
                   f"To load a file, pass its path (ending in .safetensors).")
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
    version = int(header["format_version"])
    arch, config = header["arch"], header["config"]
  except (ValueError, KeyError, TypeError) as e:
    raise LoptFileError(f"{path} has a corrupt metaopt header ({e!r}).") from e
  if not isinstance(config, dict):
    raise LoptFileError(f"{path} has a corrupt metaopt header: config must be a JSON "
                        f"object, got {config!r}.")
  if version < 1:
    raise LoptFileError(f"{path} declares file format version {version}; versions start "
                        "at 1, so the header is corrupt. Re-save it with "
                        "metaopt.lopt.io.save.")
  if version > FORMAT_VERSION:
    raise LoptFileError(f"{path} uses file format version {version}, newer than this "
                        f"metaopt understands ({FORMAT_VERSION}). Upgrade metaopt "
                        f"(pip install -U metaopt-jax).")
  return {"arch": arch, "config": config, "metadata": header.get("metadata", {})}, tensors


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
    typed_config.from_dict(base.ARCHS.get(header["arch"]).Config, header["config"])
    lopt = base.build(header["arch"], header["config"])
  except (KeyError, ValueError, TypeError) as e:
    raise LoptFileError(f"{path} names architecture {header['arch']!r} with config "
                        f"{header['config']}, which this metaopt cannot build: {e} "
                        "Re-save the file with metaopt.lopt.io.save.") from e
  if arch is not None and arch != lopt.arch:
    raise LoptFileError(f"{path} holds a {lopt.arch!r} learned optimizer, not {arch!r}.")
  _check_structure(lopt, tensors, f"file {path}")
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
    num_steps: training horizon for architectures that use it (``None``: horizon-free).
    param_info: pytree of ``tasks.ParamInfo`` (required by μP architectures).
  """
  lopt, theta, _ = load_meta_params(path_or_name)
  return lopt.transform(theta, num_steps=num_steps, param_info=param_info)
