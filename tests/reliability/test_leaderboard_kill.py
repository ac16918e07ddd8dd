"""A leaderboard job killed with SIGKILL at a random moment and resumed stores exactly
what an uninterrupted job stores: complete runs only, the missing ones re-trained,
bitwise equal curves (docs/reliability.md)."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from metaopt.eval import suites
from metaopt.eval.store import ResultsDB
from tests.eval import tiny

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# adam (the suite's reference) and sgd: 3 studies x 2 trials each.
_PLANNED = 12


def _job(suite_path, db, pause):
  return subprocess.Popen(
      [sys.executable, "-m", "tests.reliability._leaderboard_job", suite_path, db, str(pause)],
      cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stored(db) -> int:
  try:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
      return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
      conn.close()
  except sqlite3.Error:  # Not created yet.
    return 0


def _finish(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def _snapshot(db, suite):
  with ResultsDB(db, readonly=True) as r:
    return {(x["optimizer"], x["purpose"], x["seed"], json.dumps(x["config"], sort_keys=True)): x
            for x in r.runs(suite.setup_hash)}


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
  path = tmp_path / "tiny.json"
  path.write_text(json.dumps(tiny.suite_content()))
  suite = suites.load(str(path))
  killed_db, clean_db = str(tmp_path / "killed.db"), str(tmp_path / "clean.db")

  seed = random.randrange(1 << 30)
  rng = random.Random(seed)
  stop_after = rng.randrange(1, _PLANNED - 1)  # Stored runs to wait for before the kill.
  extra_delay = rng.uniform(0.0, 0.25)  # Then a random point inside the next runs.
  victim = _job(str(path), killed_db, pause=0.25)
  clean = _job(str(path), clean_db, pause=0.0)  # Runs meanwhile (its own process).
  deadline = time.time() + 180
  while _stored(killed_db) < stop_after and victim.poll() is None:
    assert time.time() < deadline, "the job stored nothing in time"
    time.sleep(0.02)
  time.sleep(extra_delay)
  assert victim.poll() is None, f"the job ended before the kill (seed {seed})"
  os.kill(victim.pid, signal.SIGKILL)
  victim.wait(30)
  assert victim.returncode == -signal.SIGKILL
  at_kill = _stored(killed_db)
  assert 1 <= at_kill < _PLANNED, (seed, at_kill)

  # Everything stored before the kill is a complete run.
  runs = _snapshot(killed_db, suite)
  for r in runs.values():
    # A tuning trial at a large learning rate may diverge: stored complete all the same.
    assert r["status"] in ("ok", "diverged"), (seed, r)
    assert r["train_loss"].shape == (40,) and r["valid_loss"].shape == (4,), (seed, r)
    assert np.isfinite(r["train_loss"][0]), (seed, r)
    assert r["status"] == "diverged" or np.all(np.isfinite(r["train_loss"])), (seed, r)

  resumed = _finish(_job(str(path), killed_db, pause=0.0))
  reference = _finish(clean)
  assert reference["trained"] == _PLANNED
  assert resumed["trained"] == _PLANNED - at_kill and resumed["skipped"] == at_kill, seed
  # A partly stored batch (an entrant's 6 trials) is trained whole again, so that its
  # missing runs come from the same vmapped program as in the uninterrupted job.
  assert resumed["recomputed"] == at_kill % (_PLANNED // 2), (seed, at_kill)

  got = _snapshot(killed_db, suite)
  want = _snapshot(clean_db, suite)
  assert got.keys() == want.keys() and len(got) == _PLANNED
  for key, w in want.items():
    g = got[key]
    assert g["status"] == w["status"], key
    for field in ("train_loss", "eval_steps", "valid_loss"):
      np.testing.assert_array_equal(g[field], w[field], err_msg=f"{key} {field} seed {seed}")
