"""Metrics logging shared by every long job: a local JSONL file, wandb, PNG curves.

wandb runs in offline mode unless asked otherwise (``mode="online"``), honours
``WANDB_MODE`` (tests set ``disabled``), and is skipped cleanly when the package is
missing or fails to start. The JSONL file is the source of truth: one JSON object
per line, appended and flushed, so a killed job loses nothing it has logged.

The logger keeps every row of the file (those read on resume and those it logged):
when ``metrics.jsonl`` is deleted or replaced while a job logs (the run directory
removed by hand), the next ``log`` writes the file again with all of them and warns,
instead of appending to a file nobody can read.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

WANDB_MODES = ("offline", "online", "disabled")
#: Seconds an online wandb start may take before falling back to offline.
WANDB_INIT_TIMEOUT_S = 20.0
#: File in a run directory holding its wandb run id (a resume continues that run).
WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(run_dir: str, resume: bool) -> str:
  """The wandb run id of ``run_dir``: the one recorded there when resuming, else a
  new one (recorded)."""
  path = os.path.join(run_dir, WANDB_ID_FILE)
  if resume and os.path.exists(path):
    with open(path) as f:
      recorded = f.read().strip()
    if recorded.isalnum():
      return recorded
  run_id = secrets.token_hex(4)
  with open(path, "w") as f:
    f.write(run_id + "\n")
  return run_id


def _to_python(value: Any) -> Any:
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


def check_run_dir(run_dir: str) -> None:
  """Raises ``ValueError`` when ``run_dir`` (or a folder above it) is an existing file."""
  probe = os.path.abspath(run_dir)
  while probe and not os.path.exists(probe):
    probe = os.path.dirname(probe) if os.path.dirname(probe) != probe else ""
  if probe and not os.path.isdir(probe):
    raise ValueError(f"run directory {run_dir} cannot be created: {probe} is an existing "
                     "file, not a directory. Choose another run directory (e.g. --out "
                     "runs/NAME).")


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
    check_run_dir(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    self.run_dir = run_dir
    self.path = os.path.join(run_dir, "metrics.jsonl")
    if not resume and os.path.exists(self.path):
      os.remove(self.path)
    if resume and os.path.exists(self.path) and not _ends_with_newline(self.path):
      # Appending after a half-written line would glue two rows together.
      _write_rows(self.path, _read_rows(self.path))
    self._config = config
    self._write_config()
    self._rows = _read_rows(self.path) if resume and os.path.exists(self.path) else []
    self._file = open(self.path, "a")
    self._wandb = None
    mode = os.environ.get("WANDB_MODE", mode)
    if mode != "disabled":
      self._wandb = self._start_wandb(run_dir, config, project, mode, name, resume)

  @staticmethod
  def _start_wandb(run_dir, config, project, mode, name, resume=False):
    """A wandb run (``None`` if wandb is missing or fails): the run directory's
    ``wandb_run_id`` is continued on resume and written for a fresh run; an online
    start that cannot reach the server within ``WANDB_INIT_TIMEOUT_S`` falls back to
    offline (``wandb sync`` uploads it later) with a one-line warning."""
    try:
      import wandb  # pylint: disable=import-outside-toplevel
    except ImportError:
      warnings.warn("wandb is not installed; logging to metrics.jsonl only.")
      return None
    run_id = wandb_run_id(run_dir, resume)

    def start(mode):
      return wandb.init(project=project, dir=run_dir, mode=mode, name=name, config=config,
                        id=run_id, resume="allow", reinit="create_new",
                        settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S,
                                                login_timeout=WANDB_INIT_TIMEOUT_S))
    try:
      return start(mode)
    except Exception as e:  # pylint: disable=broad-except  (wandb must never kill a job)
      reason = " ".join(str(e).split())[:200] or type(e).__name__
      if mode == "online":
        try:
          wandb.teardown()  # Else the failed start keeps the run id "in use".
          run = start("offline")
          warnings.warn(f"wandb could not start online ({reason}; a start may take at "
                        f"most {WANDB_INIT_TIMEOUT_S:g} s); logging offline to {run_dir}/wandb "
                        f"(upload it later with `wandb sync`).")
          return run
        except Exception:  # pylint: disable=broad-except
          pass
      warnings.warn(f"wandb failed to start ({reason}); logging to metrics.jsonl only.")
      return None

  def _write_config(self) -> None:
    if self._config is not None:
      with open(os.path.join(self.run_dir, "config.json"), "w") as f:
        json.dump(self._config, f, indent=2, default=str)

  def _vanished(self) -> bool:
    """True when ``self.path`` no longer names the file being appended to."""
    try:
      on_disk = os.stat(self.path)
    except FileNotFoundError:
      return True
    mine = os.fstat(self._file.fileno())
    return (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino)

  def _rewrite(self) -> None:
    """Writes ``metrics.jsonl`` (and ``config.json``) again from the rows kept."""
    self._file.close()
    os.makedirs(self.run_dir, exist_ok=True)
    self._write_config()
    _write_rows(self.path, self._rows)
    self._file = open(self.path, "a")
    warnings.warn(f"{self.path} was deleted or replaced while this job was logging; "
                  f"wrote it again with the {len(self._rows)} rows of this run.",
                  stacklevel=3)

  def log(self, step: int, metrics: Dict[str, Any]) -> None:
    row = {"step": int(step)}
    row.update({k: _to_python(v) for k, v in metrics.items()})
    if self._vanished():
      self._rewrite()
    self._rows.append(row)
    self._file.write(json.dumps(row, allow_nan=True) + "\n")
    self._file.flush()
    if self._wandb is not None:
      self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))

  def log_images(self, step: int, images: Dict[str, str]) -> None:
    """Uploads PNG files (``{key: path}``, e.g. the curves) to the wandb run."""
    if self._wandb is None:
      return
    try:
      import wandb  # pylint: disable=import-outside-toplevel
      self._wandb.log({k: wandb.Image(p) for k, p in images.items() if os.path.exists(p)},
                      step=int(step))
    except Exception as e:  # pylint: disable=broad-except  (never kill a job)
      warnings.warn(f"wandb could not log the images {sorted(images)} ({e}).")

  def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Logs a table (``wandb.Table``, e.g. a leaderboard) to the wandb run."""
    if self._wandb is None:
      return
    try:
      import wandb  # pylint: disable=import-outside-toplevel
      self._wandb.log({key: wandb.Table(columns=list(columns),
                                        data=[[_to_python(c) for c in r] for r in rows])})
    except Exception as e:  # pylint: disable=broad-except  (never kill a job)
      warnings.warn(f"wandb could not log the table {key!r} ({e}).")

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
