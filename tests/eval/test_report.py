"""Reports from hand-made runs stored in a database (no training): files, plots of the
top entrants, escaping of hostile names in every format, one-line output errors."""

import csv
import json
import os
import re

import numpy as np
import pytest

from metaopt.eval import report, suites
from metaopt.eval.store import ResultsDB

HOSTILE = '=HYPERLINK("http://x")|<b>'
TASKS = ("quadratic_d10_cond10", "rosenbrock_d2")


def _suite():
  suite = suites.from_dict({
      "name": "hand", "version": 1, "seeds": [0, 1, 2], "trials": 1, "tuning_seed": 3000,
      "speedup_reference": ["nadamw"],
      "target_setting": {"seeds": [1000, 1001, 1002, 1003, 1004]},
      "tasks": [{"task": t, "steps": 30, "eval_every": 10, "target": {"valid_loss": 1.0}}
                for t in TASKS]})
  return suite


def _add(db, suite, name, ruleset, task, seed, valid):
  db.add_run(suite=suite, ruleset=ruleset, optimizer=name, purpose="trial", task=task,
             seed=seed, config={"i": seed}, steps=40, status="ok", train_loss=np.ones(40),
             eval_steps=np.asarray([10, 20, 30, 40]), valid_loss=np.asarray(valid, np.float64))


@pytest.fixture()
def hand_db(tmp_path):
  suite = _suite()
  stored = suites.Suite(**{**{f: getattr(suite, f) for f in suite.__dataclass_fields__},
                           "hash": suite.setup_hash})
  db = ResultsDB(str(tmp_path / "hand.db"))
  db.register_suite(stored)
  # The reference and six other tuned baselines: all reach the target at step 20 but
  # baseline k takes 1 + 0.2 k times the reference's time per step (so their B over
  # time differ); HOSTILE never reaches it.
  names = ["nadamw", "b1", "b2", "b3", "b4", "b5", HOSTILE]
  for k, name in enumerate(names):
    db.upsert_optimizer(name, "tuned", "baseline", "sgd")
    hit = 4 if name == HOSTILE else 1
    for s in range(3):
      for task in TASKS:
        _add(db, stored, name, "tuned", task, 100 * s, [2.0] * hit + [0.5] * (4 - hit))
        db.set_timing(stored.hash, "tuned", name, task, {}, 10, [0.01 * (1 + 0.2 * k)])
  yield db, suite
  db.close()


def test_report_files_and_escaping(hand_db, tmp_path):
  db, suite = hand_db
  lb = report.compute(db, suite)
  text = report.format_table(lb)
  assert text.splitlines()[1].split()[:4] == ["optimizer", "ruleset", "kind", "B"]
  out = tmp_path / "rep"
  index = report.write_report(db.path, suite, str(out))
  assert os.path.basename(index) == "index.html"
  for f in ("README.md", "leaderboard.csv", "per_task.csv", "leaderboard.json",
            "curves_quadratic_d10_cond10.png", "profile_steps.png", "profile_time.png"):
    assert (out / f).stat().st_size > 0, f
  # CSV: a cell starting with '=' cannot become a spreadsheet formula.
  with open(out / "leaderboard.csv") as f:
    names = [r["optimizer"] for r in csv.DictReader(f)]
  assert "'" + HOSTILE in names and HOSTILE not in names
  with open(out / "per_task.csv") as f:
    assert all(not r["optimizer"].startswith("=") for r in csv.DictReader(f))
  # Markdown: the '|' in a name is escaped, so every table row keeps its columns.
  md = (out / "README.md").read_text().splitlines()
  summary = md[md.index(next(x for x in md if x.startswith("| optimizer | ruleset"))):]
  row = next(x for x in summary if "HYPERLINK" in x)
  assert "\\|<b>" in row
  cells = lambda line: re.split(r"(?<!\\)\|", line)  # noqa: E731
  assert len(cells(row)) == len(cells(summary[0]))
  # HTML: the name is escaped (no <b> element), no external resources.
  page = (out / "index.html").read_text()
  assert "<b>" not in page and "&lt;b&gt;" in page
  assert "cdn" not in page.lower()
  data = json.loads((out / "leaderboard.json").read_text())
  assert data["targets"] == {t: 1.0 for t in TASKS}


def test_plots_show_the_reference_and_the_top_entrants(hand_db):
  db, suite = hand_db
  lb = report.compute(db, suite)
  shown = [e["name"] for e in report.plotted(lb)]
  assert shown[0] == "nadamw" and len(shown) == 1 + report.PLOT_TOP
  assert HOSTILE not in shown  # The slowest is left out of the plots.


def test_report_errors(hand_db, tmp_path):
  db, suite = hand_db
  with pytest.raises(FileNotFoundError, match="leaderboard run"):
    report.write_report(str(tmp_path / "missing.db"), suite, str(tmp_path / "o"))
  ResultsDB(str(tmp_path / "empty.db")).close()
  with pytest.raises(ValueError, match="no runs"):
    report.write_report(str(tmp_path / "empty.db"), suite, str(tmp_path / "o"))
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(report.ReportError, match="is a file, not a folder"):
    report.write_report(db.path, suite, str(a_file))
  read_only = tmp_path / "ro"
  read_only.mkdir()
  os.chmod(read_only, 0o500)
  try:
    if os.access(read_only, os.W_OK):  # root ignores permissions
      pytest.skip("running as root: a read-only folder is writable")
    with pytest.raises(report.ReportError, match="cannot write the report"):
      report.write_report(db.path, suite, str(read_only / "out"))
  finally:
    os.chmod(read_only, 0o700)


def test_report_logged_to_wandb_offline(hand_db, tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  db, suite = hand_db
  out = tmp_path / "rep"
  report.write_report(db.path, suite, str(out))
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  report.log_to_wandb(report.compute(db, suite), str(out), "offline")
  runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
  assert len(runs) == 1 and runs[0].stat().st_size > 0
  rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
  assert rows[0]["score_time/nadamw"] == pytest.approx(1.0)
