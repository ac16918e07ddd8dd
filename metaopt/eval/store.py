"""The results database: every leaderboard run, step timing and suite version.

SQLite (stdlib ``sqlite3``), one file (default ``leaderboard.db`` in the working
directory). Each row of ``runs`` is one training run: optimizer, ruleset, full
config, task, seed, step budget, the full train-loss curve, the validation curve,
wall time, status (``ok`` / ``diverged`` / ``error`` with its message), package
versions, and the suite name, version and content hash it was run for. A run is
identified by ``(suite_hash, ruleset, optimizer, purpose, task, seed, config)``;
``has_run`` lets an interrupted leaderboard skip what is already stored. Each run
is committed as soon as it finishes, so a killed job loses at most the run in
flight.

Concurrency and bad files: the database is in WAL mode with a busy timeout, so a
reader and a writer (or two writers) wait for each other instead of failing with
"database is locked"; read-only users (``show``, ``report``) open it with
``readonly=True`` (sqlite ``mode=ro``), which never creates or changes the file. A
path that is a directory, not an SQLite file, truncated, or another program's
database is a ``ResultsDBError`` naming the file and the fix. ``runner_lock`` keeps
a second ``leaderboard run`` off a database that a runner is using.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
import urllib.parse
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np

from metaopt import runlock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suites (
  name TEXT NOT NULL, version INTEGER NOT NULL, hash TEXT NOT NULL, content TEXT NOT NULL,
  created REAL NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS optimizers (
  name TEXT NOT NULL, ruleset TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
  trained_on TEXT NOT NULL, meta_cost_hours REAL, description TEXT NOT NULL,
  PRIMARY KEY (name, ruleset));
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  suite TEXT NOT NULL, suite_version INTEGER NOT NULL, suite_hash TEXT NOT NULL,
  ruleset TEXT NOT NULL, optimizer TEXT NOT NULL, purpose TEXT NOT NULL,
  config TEXT NOT NULL, task TEXT NOT NULL, seed INTEGER NOT NULL, steps INTEGER NOT NULL,
  status TEXT NOT NULL, error TEXT,
  train_loss TEXT, eval_steps TEXT, valid_loss TEXT, wall_time REAL,
  package_version TEXT NOT NULL, jax_version TEXT NOT NULL, created REAL NOT NULL,
  UNIQUE (suite_hash, ruleset, optimizer, purpose, task, seed, config));
CREATE TABLE IF NOT EXISTS timings (
  suite_hash TEXT NOT NULL, ruleset TEXT NOT NULL, optimizer TEXT NOT NULL, task TEXT NOT NULL,
  config TEXT NOT NULL, steps INTEGER NOT NULL, seconds TEXT NOT NULL, per_step REAL NOT NULL,
  created REAL NOT NULL, PRIMARY KEY (suite_hash, ruleset, optimizer, task));
CREATE TABLE IF NOT EXISTS compile_times (
  suite_hash TEXT NOT NULL, ruleset TEXT NOT NULL, optimizer TEXT NOT NULL, task TEXT NOT NULL,
  seconds REAL NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (suite_hash, ruleset, optimizer, task));
"""

_TABLES = ("suites", "optimizers", "runs", "timings", "compile_times")
#: Seconds a connection waits for another process's write lock before failing.
BUSY_TIMEOUT_S = 60.0

STATUSES = ("ok", "diverged", "error")
#: ``trial``: a trial of a study (external tuning) or a self-tuning run;
#: ``target_tune``/``target``: target-setting sweep and its repeats on the
#: target-setting seeds. (Databases of the retired v1 protocol also hold ``tune`` and
#: ``eval`` rows, and a ``tuning`` table: readable, never written.)
PURPOSES = ("trial", "target_tune", "target")


def config_key(config: Dict[str, Any]) -> str:
  """Canonical JSON of a config (the identity of a run's hyper-parameters)."""
  return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def _dumps(x) -> Optional[str]:
  if x is None:
    return None
  return json.dumps(np.asarray(x, np.float64).tolist(), allow_nan=True)


def _loads(s) -> Optional[np.ndarray]:
  return None if s is None else np.asarray(json.loads(s), np.float64)


class SuiteMismatchError(ValueError):
  """The database holds the same suite name and version with different content."""


class ResultsDBError(ValueError):
  """The results database cannot be used (a directory, not SQLite, corrupt, foreign,
  or held by another runner); the message names the file and the fix."""


def _rebuild_hint(path: str) -> str:
  return (f"Pass another --db, or move {path} away and run `metaopt leaderboard run` to "
          "build a new one.")


@contextlib.contextmanager
def runner_lock(path: str) -> Iterator[None]:
  """Holds the runner lock of the database ``path`` (``metaopt.runlock`` on
  ``<path>.lock``) while a runner uses it: a second runner on the same database would
  train the same missing runs twice. The lock dies with its process (a killed runner
  never blocks the next). Raises ``ResultsDBError`` naming the other process."""
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(runlock.hold(path + ".lock", f"results database {path}",
                                       "wait for it to finish, or use another --db."))
    except runlock.RunLockError as e:
      raise ResultsDBError(f"another runner is using {path}: {e}") from None
    yield


class ResultsDB:
  """A thin typed wrapper over the SQLite file (``ResultsDB(path)``; ``close()``).

  Args:
    path: the SQLite file; created (with the schema) unless ``readonly``.
    readonly: open with sqlite ``mode=ro``: the file must exist and is never
      written (no schema is added to an empty file).
  """

  def __init__(self, path: str, readonly: bool = False):
    self.path = path
    self.readonly = readonly
    if os.path.isdir(path):
      raise ResultsDBError(f"{path} is a directory, not a results database; pass a file "
                           f"path such as --db {os.path.join(path, 'leaderboard.db')}.")
    if readonly and not os.path.exists(path):
      raise FileNotFoundError(f"No results database at {path!r}; run `metaopt leaderboard "
                              f"run --db {path}` first.")
    try:
      if readonly:
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
      else:
        self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
      raise ResultsDBError(f"cannot open results database {path} ({e}); check that its "
                           "folder exists and is writable.") from e
    self.conn.row_factory = sqlite3.Row
    try:
      self._check_and_init()
    except BaseException:
      self.conn.close()
      raise

  def _check_and_init(self) -> None:
    try:
      problems = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
      tables = {r[0] for r in self.conn.execute(
          "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    except sqlite3.DatabaseError as e:
      raise ResultsDBError(f"{self.path} is not a results database, or it is truncated or "
                           f"corrupt ({e}). {_rebuild_hint(self.path)}") from e
    if problems != ["ok"]:
      raise ResultsDBError(f"{self.path} is a corrupt or truncated SQLite database "
                           f"({problems[0]}). {_rebuild_hint(self.path)}")
    ours = tables & set(_TABLES)
    if tables and not ours:
      raise ResultsDBError(f"{self.path} is an SQLite database of another program (tables "
                           f"{sorted(tables)}), not a metaopt results database. "
                           f"{_rebuild_hint(self.path)}")
    if self.readonly:
      if "runs" not in tables:
        raise ResultsDBError(f"{self.path} holds no results (an empty file); run "
                             f"`metaopt leaderboard run --db {self.path}` first.")
      return
    try:
      # WAL: readers never block the writer and see only committed runs.
      self.conn.execute("PRAGMA journal_mode=WAL")
      self.conn.executescript(_SCHEMA)
      self.conn.commit()
    except sqlite3.OperationalError as e:
      raise ResultsDBError(f"cannot write the results database {self.path} ({e}); check "
                           f"that the file and its folder are writable.") from e

  def close(self) -> None:
    self.conn.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # Suites ------------------------------------------------------------------
  def register_suite(self, suite) -> None:
    """Records ``suite``; refuses a known name+version whose content changed."""
    row = self.conn.execute("SELECT hash FROM suites WHERE name=? AND version=?",
                            (suite.name, suite.version)).fetchone()
    if row is not None:
      if row["hash"] != suite.hash:
        raise SuiteMismatchError(
            f"{self.path} holds results for suite {suite.id} with content hash {row['hash']}, "
            f"but the suite now hashes to {suite.hash}: its content changed without a "
            "version bump. Bump the suite's version (old results stay tied to the old "
            "one) or use another --db.")
      return
    # OR IGNORE: another process may register the same suite between the SELECT and
    # the INSERT; the check below then compares against what it stored.
    self.conn.execute("INSERT OR IGNORE INTO suites VALUES (?,?,?,?,?)",
                      (suite.name, suite.version, suite.hash,
                       json.dumps(suite.content, sort_keys=True), time.time()))
    self.conn.commit()
    if self.suite_hash(suite.name, suite.version) != suite.hash:
      self.register_suite(suite)  # Raises SuiteMismatchError.

  def suite_hash(self, name: str, version: int) -> Optional[str]:
    row = self.conn.execute("SELECT hash FROM suites WHERE name=? AND version=?",
                            (name, version)).fetchone()
    return None if row is None else row["hash"]

  # Optimizers --------------------------------------------------------------
  def upsert_optimizer(self, name: str, ruleset: str, kind: str, source: str,
                       trained_on: Iterable[str] = (), meta_cost_hours: Optional[float] = None,
                       description: str = "") -> None:
    self.conn.execute(
        "INSERT OR REPLACE INTO optimizers VALUES (?,?,?,?,?,?,?)",
        (name, ruleset, kind, source,
         json.dumps(trained_on if isinstance(trained_on, dict) else list(trained_on)),
         meta_cost_hours,
         description))
    self.conn.commit()

  def optimizers(self) -> List[Dict[str, Any]]:
    rows = self.conn.execute("SELECT * FROM optimizers ORDER BY ruleset, name").fetchall()
    out = []
    for r in rows:
      d = dict(r)
      d["trained_on"] = json.loads(d["trained_on"])
      out.append(d)
    return out

  # Runs --------------------------------------------------------------------
  def has_run(self, suite_hash: str, ruleset: str, optimizer: str, purpose: str, task: str,
              seed: int, config: Dict[str, Any], include_errors: bool = True) -> bool:
    row = self.conn.execute(
        "SELECT status FROM runs WHERE suite_hash=? AND ruleset=? AND optimizer=? AND purpose=? "
        "AND task=? AND seed=? AND config=?",
        (suite_hash, ruleset, optimizer, purpose, task, seed, config_key(config))).fetchone()
    if row is None:
      return False
    return include_errors or row["status"] != "error"

  def add_run(self, *, suite, ruleset: str, optimizer: str, purpose: str, task: str,
              seed: int, config: Dict[str, Any], steps: int, status: str,
              error: Optional[str] = None, train_loss=None, eval_steps=None, valid_loss=None,
              wall_time: Optional[float] = None, package_version: str = "",
              jax_version: str = "", valid_error=None) -> None:
    """Stores (or replaces, e.g. a retried error) one run and commits.

    ``valid_error`` (the validation error rate at ``eval_steps``, classifiers) is
    stored as a second row of the ``valid_loss`` column: ``[[losses], [errors]]``,
    so older databases need no new column; ``runs`` splits it again."""
    if status not in STATUSES:
      raise ValueError(f"status {status!r} is not one of {STATUSES}.")
    if purpose not in PURPOSES:
      raise ValueError(f"purpose {purpose!r} is not one of {PURPOSES}.")
    wt = None if wall_time is None or not math.isfinite(wall_time) else float(wall_time)
    self.conn.execute(
        "INSERT OR REPLACE INTO runs (suite, suite_version, suite_hash, ruleset, optimizer, "
        "purpose, config, task, seed, steps, status, error, train_loss, eval_steps, valid_loss, "
        "wall_time, package_version, jax_version, created) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (suite.name, suite.version, suite.hash, ruleset, optimizer, purpose, config_key(config),
         task, int(seed), int(steps), status, error, _dumps(train_loss), _dumps(eval_steps),
         _dumps(valid_loss if valid_error is None or valid_loss is None
                else np.stack([np.asarray(valid_loss, np.float64),
                               np.asarray(valid_error, np.float64)])),
         wt, package_version, jax_version, time.time()))
    self.conn.commit()

  def runs(self, suite_hash: Optional[str] = None, purpose: Optional[str] = None,
           **where) -> List[Dict[str, Any]]:
    """Runs as dicts with curves decoded to arrays and ``config`` to a dict."""
    conds, args = [], []
    for k, v in dict(where, suite_hash=suite_hash, purpose=purpose).items():
      if v is not None:
        conds.append(f"{k}=?")
        args.append(v)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(conds) if conds else "")
    out = []
    for r in self.conn.execute(sql + " ORDER BY id", args).fetchall():
      d = dict(r)
      d["config"] = json.loads(d["config"])
      for k in ("train_loss", "eval_steps", "valid_loss"):
        d[k] = _loads(d[k])
      d["valid_error"] = None
      if d["valid_loss"] is not None and d["valid_loss"].ndim == 2:
        d["valid_loss"], d["valid_error"] = d["valid_loss"][0], d["valid_loss"][1]
      if d["wall_time"] is None:
        d["wall_time"] = float("nan")
      out.append(d)
    return out

  # Timings -----------------------------------------------------------------
  def set_timing(self, suite_hash: str, ruleset: str, optimizer: str, task: str,
                 config: Dict[str, Any], steps: int, seconds: List[float]) -> float:
    """Stores repeated timings (seconds) of ``steps`` compiled steps; returns and
    stores the median time per step."""
    per_step = float(np.median(seconds)) / steps
    self.conn.execute(
        "INSERT OR REPLACE INTO timings VALUES (?,?,?,?,?,?,?,?,?)",
        (suite_hash, ruleset, optimizer, task, config_key(config), int(steps),
         json.dumps([float(x) for x in seconds]), per_step, time.time()))
    self.conn.commit()
    return per_step

  def timings(self, suite_hash: str) -> Dict[tuple, Dict[str, Any]]:
    """``{(optimizer, ruleset, task): {"per_step", "seconds", "steps", "config"}}``."""
    if not self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND "
                             "name='timings'").fetchone():
      return {}  # A read-only database written before timings existed.
    rows = self.conn.execute("SELECT * FROM timings WHERE suite_hash=?", (suite_hash,))
    return {(r["optimizer"], r["ruleset"], r["task"]):
            {"per_step": r["per_step"], "seconds": json.loads(r["seconds"]), "steps": r["steps"],
             "config": json.loads(r["config"])} for r in rows.fetchall()}

  def set_compile_time(self, suite_hash: str, ruleset: str, optimizer: str, task: str,
                       seconds: float) -> None:
    """Stores the seconds XLA took to compile an entrant's training step on a task
    (shown apart from the score: compilation is a one-time cost)."""
    self.conn.execute("INSERT OR REPLACE INTO compile_times VALUES (?,?,?,?,?,?)",
                      (suite_hash, ruleset, optimizer, task, float(seconds), time.time()))
    self.conn.commit()

  def compile_times(self, suite_hash: str) -> Dict[tuple, float]:
    """``{(optimizer, ruleset, task): seconds}`` (empty for databases without them)."""
    if not self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND "
                             "name='compile_times'").fetchone():
      return {}
    rows = self.conn.execute("SELECT * FROM compile_times WHERE suite_hash=?", (suite_hash,))
    return {(r["optimizer"], r["ruleset"], r["task"]): r["seconds"] for r in rows.fetchall()}

  # Merging -----------------------------------------------------------------
  def merge(self, other_path: str) -> int:
    """Copies the runs, timings, compile times, optimizers and suites of the database at
    ``other_path`` that this one lacks (e.g. from processes that each ran some tasks
    with ``--tasks``); returns the number of runs added. Suites registered in both
    must agree (``SuiteMismatchError`` otherwise)."""
    with ResultsDB(other_path, readonly=True) as other:
      for row in other.conn.execute("SELECT * FROM suites").fetchall():
        mine = self.suite_hash(row["name"], row["version"])
        if mine is not None and mine != row["hash"]:
          raise SuiteMismatchError(f"{other_path} holds suite {row['name']}@{row['version']} "
                                   f"with hash {row['hash']}, {self.path} with {mine}.")
    self.conn.execute("ATTACH DATABASE ? AS other",
                      ("file:" + urllib.parse.quote(os.path.abspath(other_path)) + "?mode=ro",))
    try:
      before = self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
      for table in ("runs", "suites", "optimizers", "timings", "compile_times"):
        theirs = {r[1] for r in self.conn.execute(f"PRAGMA other.table_info({table})")}
        if not theirs:
          continue  # A source written before the table existed.
        ours = [r[1] for r in self.conn.execute(f"PRAGMA main.table_info({table})")
                if r[1] != "id"]
        required = {r[1] for r in self.conn.execute(f"PRAGMA main.table_info({table})")
                    if r[3] and r[4] is None and r[1] != "id"}
        missing = sorted(required - theirs)
        if missing:
          raise ResultsDBError(
              f"{other_path} was written by an older metaopt: its {table} table lacks "
              f"{missing}; re-run its runs with this version, or merge it with the version "
              "that wrote it.")
        # Columns an older source lacks (e.g. valid_error) stay empty in the copy.
        names = ", ".join(c for c in ours if c in theirs)
        self.conn.execute(f"INSERT OR IGNORE INTO {table} ({names}) "
                          f"SELECT {names} FROM other.{table}")
      self.conn.commit()
      return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] - before
    finally:
      self.conn.execute("DETACH DATABASE other")
