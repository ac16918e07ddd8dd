"""Metrics logging shared by every long job: a local JSONL file, wandb, PNG curves.

wandb runs in offline mode unless asked otherwise (``mode="online"``), honours
``WANDB_MODE`` (tests set ``disabled``), and is skipped cleanly when the package is
missing or fails to start. The JSONL file is the source of truth: one JSON object
per line, appended and flushed, so a killed job loses nothing it has logged.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

WANDB_MODES = ("offline", "online", "disabled")


def _to_python(value: Any) -> Any:
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


def _ends_with_newline(path: str) -> bool:
  """True for an empty file or one whose last byte is a newline."""
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


class MetricsLogger:
  """Writes metrics to ``<run_dir>/metrics.jsonl`` and to wandb.

  Args:
    run_dir: directory for ``metrics.jsonl`` (created).
    config: run configuration, stored by wandb and in ``config.json``.
    project: wandb project name.
    mode: wandb mode, one of ``WANDB_MODES``; ``WANDB_MODE`` in the environment
      overrides it.
    resume: append to an existing metrics file (exact resume) instead of
      starting a new one.
  """

  def __init__(self, run_dir: str, config: Optional[Dict[str, Any]] = None,
               project: str = "metaopt", mode: str = "offline", name: Optional[str] = None,
               resume: bool = False):
    if mode not in WANDB_MODES:
      raise ValueError(f"wandb mode {mode!r} is not one of {WANDB_MODES}.")
    os.makedirs(run_dir, exist_ok=True)
    self.run_dir = run_dir
    self.path = os.path.join(run_dir, "metrics.jsonl")
    if not resume and os.path.exists(self.path):
      os.remove(self.path)
    if resume and os.path.exists(self.path) and not _ends_with_newline(self.path):
      # Appending after a half-written line would glue two rows together.
      _write_rows(self.path, _read_rows(self.path))
    if config is not None:
      with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, default=str)
    self._file = open(self.path, "a")
    self._wandb = None
    mode = os.environ.get("WANDB_MODE", mode)
    if mode != "disabled":
      self._wandb = self._start_wandb(run_dir, config, project, mode, name)

  @staticmethod
  def _start_wandb(run_dir, config, project, mode, name):
    try:
      import wandb  # pylint: disable=import-outside-toplevel
    except ImportError:
      warnings.warn("wandb is not installed; logging to metrics.jsonl only.")
      return None
    try:
      return wandb.init(project=project, dir=run_dir, mode=mode, name=name,
                        config=config, reinit="create_new")
    except Exception as e:  # wandb failing must never kill a training job.
      warnings.warn(f"wandb failed to start ({e}); logging to metrics.jsonl only.")
      return None

  def log(self, step: int, metrics: Dict[str, Any]) -> None:
    row = {"step": int(step)}
    row.update({k: _to_python(v) for k, v in metrics.items()})
    self._file.write(json.dumps(row, allow_nan=True) + "\n")
    self._file.flush()
    if self._wandb is not None:
      self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))

  def close(self) -> None:
    self._file.close()
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _metrics_file(path: str) -> str:
  return os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path


def _read_rows(path: str) -> List[Dict[str, Any]]:
  """Parses ``path``; a last line without its newline that is not valid JSON (the
  job was killed while writing it) is dropped with a warning naming the file."""
  with open(path) as f:
    text = f.read()
  lines = text.split("\n")
  tail = lines.pop()  # "" when the file ends with a newline.
  rows = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}, line {number}: not a JSON metrics row ({e.msg}); delete "
                       "or repair that line.") from e
  if tail.strip():
    try:
      rows.append(json.loads(tail))
    except json.JSONDecodeError:
      warnings.warn(f"{path}: dropped a half-written last line ({len(tail)} characters; "
                    "the job was stopped while logging it).")
  return rows


def _write_rows(path: str, rows: Iterable[Dict[str, Any]]) -> None:
  """Atomically replaces ``path`` with ``rows``, one terminated line each."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for row in rows:
      f.write(json.dumps(row, allow_nan=True) + "\n")
  os.replace(tmp, path)


def read_metrics(path: str) -> List[Dict[str, Any]]:
  """Rows of a ``metrics.jsonl`` file (or of the one inside a run directory).

  A half-written last line (a killed job) is dropped with a warning; a malformed
  line elsewhere is a ``ValueError`` naming the file and line.
  """
  return _read_rows(_metrics_file(path))


def truncate_metrics(path: str, max_step: int) -> None:
  """Drops rows with ``step > max_step`` (rows logged after the last checkpoint) and
  a half-written last line, so a resumed run's metrics equal an uninterrupted run's."""
  if not os.path.exists(path):
    return
  _write_rows(path, [row for row in _read_rows(path) if row["step"] <= max_step])


def plot_curves(rows: Sequence[Dict[str, Any]], keys: Iterable[str], path: str,
                title: str = "", logy: bool = True, xlabel: str = "step") -> str:
  """Writes a PNG with one line per metric key against ``step``; returns ``path``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for key in keys:
    pts = [(r["step"], r[key]) for r in rows
           if key in r and isinstance(r[key], (int, float)) and math.isfinite(r[key])]
    if pts:
      xs, ys = zip(*pts)
      ax.plot(xs, ys, label=key)
  if logy:
    ys_all = [r.get(k) for r in rows for k in keys]
    if all(isinstance(y, (int, float)) and y > 0 for y in ys_all if y is not None):
      ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if ax.get_lines():  # A run that diverged at once has no finite point to label.
    ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
