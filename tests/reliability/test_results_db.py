"""The leaderboard database under faults: bad files, a zero-byte file, locks, races."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from metaopt.cli import main as cli_main
from metaopt.eval import protocol, store, suites
from tests.eval import tiny


@pytest.fixture()
def suite_path(tmp_path):
  tiny.register()
  path = tmp_path / "tiny.json"
  path.write_text(json.dumps(tiny.suite_content(steps=9, eval_every=3, trials=1)))
  yield str(path)
  tiny.unregister()


def _one_error_line(capsys, *needles):
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err and len(err.splitlines()) == 1, err
  for n in needles:
    assert n in err, err
  return err


def _bad_files(tmp_path):
  good = tmp_path / "good.db"
  with store.ResultsDB(str(good)) as db:
    db.conn.executemany("INSERT INTO suites VALUES (?,?,?,?,?)",
                        [(f"s{i}", 1, "h", "x" * 4000, 0.0) for i in range(50)])
    db.conn.commit()
  data = good.read_bytes()
  (tmp_path / "truncated.db").write_bytes(data[:len(data) // 3])
  (tmp_path / "notes.db").write_text("these are my notes, not a database\n" * 20)
  foreign = sqlite3.connect(str(tmp_path / "foreign.db"))
  foreign.execute("CREATE TABLE photos (id INTEGER)")
  foreign.commit()
  foreign.close()
  (tmp_path / "dir.db").mkdir()
  return {"truncated.db": "truncated or", "notes.db": "not a results database",
          "foreign.db": "another program", "dir.db": "is a directory"}


@pytest.mark.parametrize("action", ["show", "report", "run"])
def test_bad_database_files_exit_2_with_one_line(tmp_path, suite_path, capsys, action):
  for name, why in _bad_files(tmp_path).items():
    path = str(tmp_path / name)
    before = None if os.path.isdir(path) else open(path, "rb").read()
    extra = {"run": ["--optimizers", "adam", "--no-progress"],
             "report": ["--out", str(tmp_path / "out")], "show": []}[action]
    rc = cli_main(["leaderboard", action, "--suite", suite_path, "--db", path, *extra])
    assert rc == 2, name
    _one_error_line(capsys, path, why)
    if before is not None:  # Refused files are left exactly as they were.
      assert open(path, "rb").read() == before, name


def test_read_commands_leave_a_zero_byte_file_untouched(tmp_path, suite_path, capsys):
  path = tmp_path / "empty.db"
  path.touch()
  for action, extra in (("show", []), ("report", ["--out", str(tmp_path / "o")])):
    assert cli_main(["leaderboard", action, "--suite", suite_path, "--db", str(path),
                     *extra]) == 2
    _one_error_line(capsys, str(path), "holds no results", "leaderboard run")
    assert path.stat().st_size == 0
  assert sorted(os.listdir(tmp_path)) == ["empty.db", "tiny.json"]


def test_a_second_runner_is_refused(tmp_path, suite_path, capsys):
  db = str(tmp_path / "r.db")
  with store.runner_lock(db):
    with pytest.raises(store.ResultsDBError, match=f"another runner is using {db}"):
      protocol.run_leaderboard(suite_path, ["adam"], db_path=db, progress=False,
                                  log=lambda m: None)
    assert cli_main(["leaderboard", "run", "--suite", suite_path, "--db", db,
                     "--optimizers", "adam", "--no-progress"]) == 2
    _one_error_line(capsys, f"another runner is using {db}", f"process {os.getpid()}")
  # Released: the runner now proceeds.
  stats = protocol.run_leaderboard(suite_path, ["adam"], db_path=db, progress=False,
                                      log=lambda m: None)
  assert stats["trained"] == 3  # One trial in each of the 3 studies.


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO optimizers VALUES ('x','tuned','baseline','x','[]',0,'')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.commit()
"""


def test_a_writer_waits_for_a_database_locked_by_another_process(tmp_path):
  path = str(tmp_path / "busy.db")
  suite = suites.from_dict(tiny.suite_content())
  with store.ResultsDB(path) as db:
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, path, "2"],
                              stdout=subprocess.PIPE, text=True)
    try:
      assert holder.stdout.readline().strip() == "locked"
      t0 = time.perf_counter()
      db.register_suite(suite)  # Was "database is locked" (5 s default timeout).
      waited = time.perf_counter() - t0
    finally:
      holder.wait(30)
    assert waited >= 1.0 and holder.returncode == 0
    assert db.suite_hash(suite.name, suite.version) == suite.hash
    assert db.conn.execute("SELECT COUNT(*) FROM optimizers").fetchone()[0] == 1


class _RacingConnection:
  """Forwards to a connection; right after the suite lookup, ``racer`` runs (another
  process registering the same suite between the SELECT and the INSERT)."""

  def __init__(self, conn, racer):
    self._conn, self._racer = conn, racer

  def execute(self, sql, *args):
    cursor = self._conn.execute(sql, *args)
    if sql.startswith("SELECT hash FROM suites") and self._racer is not None:
      rows = cursor.fetchall()
      racer, self._racer = self._racer, None
      racer()
      return _Rows(rows)
    return cursor

  def __getattr__(self, name):
    return getattr(self._conn, name)


class _Rows:
  def __init__(self, rows):
    self._rows = rows

  def fetchone(self):
    return self._rows[0] if self._rows else None


def test_racing_register_suite_calls_both_succeed(tmp_path):
  suite = suites.from_dict(tiny.suite_content())
  with store.ResultsDB(str(tmp_path / "race.db")) as a, \
       store.ResultsDB(str(tmp_path / "race.db")) as b:
    a.conn = _RacingConnection(a.conn, lambda: b.register_suite(suite))
    a.register_suite(suite)  # Was: sqlite3.IntegrityError UNIQUE constraint failed.
    assert b.conn.execute("SELECT COUNT(*) FROM suites").fetchone()[0] == 1
  # A racer that stored other content under the same name and version still loses.
  changed = suites.from_dict(tiny.suite_content(steps=60))
  assert changed.hash != suite.hash
  with store.ResultsDB(str(tmp_path / "race2.db")) as a, \
       store.ResultsDB(str(tmp_path / "race2.db")) as b:
    a.conn = _RacingConnection(a.conn, lambda: b.register_suite(suite))
    with pytest.raises(store.SuiteMismatchError, match="content changed"):
      a.register_suite(changed)
