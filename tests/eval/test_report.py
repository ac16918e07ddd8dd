"""Leaderboard metrics from hand-made curves stored in a database (no training)."""

import csv
import json
import math
import os

import numpy as np
import pytest

from metaopt.eval import report, suites
from metaopt.eval.store import ResultsDB

NAN = float("nan")


def _suite():
  return suites.from_dict({
      "name": "hand", "version": 1, "seeds": [0, 1, 2], "tuning_seed": 10000,
      "smoothing_window": 1, "reference": "adam", "r_max": 4.0,
      "tasks": [{"task": "t1", "steps": 4, "eval_every": 2},
                {"task": "t2", "steps": 2, "eval_every": 2, "families": ["fam_b"]}]})


def _add(db, suite, opt, ruleset, task, seed, curve, wall=4.0, status=None):
  curve = np.asarray(curve, np.float64)
  if status is None:
    status = "ok" if np.all(np.isfinite(curve)) else "diverged"
  db.add_run(suite=suite, ruleset=ruleset, optimizer=opt, purpose="eval", task=task, seed=seed,
             config={"learning_rate": 0.1}, steps=len(curve), status=status,
             train_loss=curve, eval_steps=[len(curve)], valid_loss=[curve[-1]], wall_time=wall)


@pytest.fixture()
def hand_db(tmp_path):
  suite = _suite()
  db = ResultsDB(str(tmp_path / "hand.db"))
  db.register_suite(suite)
  db.upsert_optimizer("adam", "tuned", "baseline", "adam")
  db.upsert_optimizer("sgd", "tuned", "baseline", "sgd")
  db.upsert_optimizer("lo", "self_tuning", "learned", "lo.safetensors", ["fam_b"], 2.5)
  # t1 (window 1 => running min). Adam finals 1, 2, 3 -> target = median = 2.
  # Adam steps to <= 2: 3, 3, never -> median 3.
  for seed, c in enumerate([[4, 3, 2, 1], [4, 3, 2, 2], [4, 4, 3, 3]]):
    _add(db, suite, "adam", "tuned", "t1", seed, c)
  # SGD on t1: step 1, step 2, and a NaN (diverged) run that never reaches -> median 2.
  for seed, c in enumerate([[2, 2, 2, 2], [3, 2, 2, 2], [3, NAN, NAN, NAN]]):
    _add(db, suite, "sgd", "tuned", "t1", seed, c)
  # t2: Adam [1, .5] on all seeds -> target .5, reached at step 2. SGD always diverges.
  for seed in range(3):
    _add(db, suite, "adam", "tuned", "t2", seed, [1.0, 0.5])
    _add(db, suite, "sgd", "tuned", "t2", seed, [NAN, NAN])
  # The learned optimizer reaches t1's target at step 2 and t2's at step 1, and takes
  # 8 s per 4-step run on t1 (2 s/step -> 4 s to target).
  for seed in range(3):
    _add(db, suite, "lo", "self_tuning", "t1", seed, [3, 2, 1, 1], wall=8.0)
    _add(db, suite, "lo", "self_tuning", "t2", seed, [0.4, 0.4], wall=1.0)
  yield db, suite
  db.close()


def test_hand_made_curves_give_hand_computed_scores(hand_db):
  db, suite = hand_db
  lb = report.compute(db, suite)
  assert lb["targets"] == {"t1": 2.0, "t2": 0.5}
  e = {x["name"]: x for x in lb["entrants"]}
  assert e["adam"]["per_task"]["t1"]["steps_to_target"] == 3
  assert e["adam"]["per_task"]["t2"]["steps_to_target"] == 2
  assert e["sgd"]["per_task"]["t1"]["steps_to_target"] == 2
  assert e["sgd"]["per_task"]["t2"]["steps_to_target"] == math.inf  # NaN runs: not reached.
  assert e["sgd"]["per_task"]["t1"]["diverged"] == 1
  assert e["sgd"]["per_task"]["t2"]["diverged"] == 3
  # Within the tuned ruleset: adam ratios (3/2, 2/2) -> B = ((4-1.5) + (4-1)) / 2 / 3.
  assert e["adam"]["score_steps"] == pytest.approx(5.5 / 6)
  # sgd ratios (1, inf) -> B = (3 + 0) / 2 / 3.
  assert e["sgd"]["score_steps"] == pytest.approx(0.5)
  # Alone in its ruleset the learned optimizer has ratio 1 everywhere.
  assert e["lo"]["score_steps"] == pytest.approx(1.0)
  # Across all: best t1 = 2 (sgd, lo), best t2 = 1 (lo). adam: (1.5, 2) -> (2.5 + 2)/6.
  assert e["adam"]["score_steps_all"] == pytest.approx(4.5 / 6)
  assert e["lo"]["score_steps_all"] == pytest.approx(1.0)
  # Speedups over tuned adam: sgd t1 3/2 (t2 missed) -> geomean 1.5, 1 of 2 faster.
  assert e["sgd"]["speedup_geomean"] == pytest.approx(1.5)
  assert e["sgd"]["frac_faster"] == pytest.approx(0.5)
  assert e["sgd"]["reached"] == 1
  # lo: t1 3/2, t2 2/1 -> sqrt(3).
  assert e["lo"]["speedup_geomean"] == pytest.approx(math.sqrt(3.0))
  assert e["lo"]["frac_faster"] == 1.0
  # Wall clock: lo 2 s/step * 2 steps = 4 s on t1; adam 1 s/step * 3 steps = 3 s.
  assert e["lo"]["per_task"]["t1"]["seconds_to_target"] == pytest.approx(4.0)
  assert e["adam"]["per_task"]["t1"]["seconds_to_target"] == pytest.approx(3.0)
  # Losses: final valid median of (1, 2, 3) = 2; best train = running min at the end.
  assert e["adam"]["per_task"]["t1"]["final_valid"] == pytest.approx(2.0)
  assert e["adam"]["per_task"]["t1"]["best_train"] == pytest.approx(2.0)
  # Leakage: lo was meta-trained on fam_b, the family of t2.
  assert e["lo"]["leakage"] == {"t2": ["fam_b"]}
  assert e["lo"]["meta_cost_hours"] == 2.5
  assert e["adam"]["leakage"] == {}


def test_format_table_and_report_files(hand_db, tmp_path):
  db, suite = hand_db
  lb = report.compute(db, suite)
  text = report.format_table(lb)
  assert "OVERLAP: t2 (fam_b)" in text and "2.5" in text
  assert [l.split()[0] for l in text.splitlines()[3:6]] == ["adam", "sgd", "lo"]
  out = tmp_path / "rep"
  index = report.write_report(db.path, suite, str(out))
  assert os.path.basename(index) == "index.html"
  for f in ("README.md", "leaderboard.csv", "per_task.csv", "leaderboard.json",
            "curves_t1.png", "curves_t2.png", "profile_steps.png", "profile_time.png"):
    assert (out / f).stat().st_size > 0, f
  with open(out / "leaderboard.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["optimizer"] for r in rows] == ["adam", "sgd", "lo"]
  with open(out / "per_task.csv") as f:
    assert len(list(csv.DictReader(f))) == 6
  data = json.loads((out / "leaderboard.json").read_text())
  assert data["targets"] == {"t1": 2.0, "t2": 0.5}
  html = (out / "index.html").read_text()
  assert html.count('<tr data-optimizer=') == 3 and "cdn" not in html.lower()
  assert "http://" not in html and "https://" not in html


def test_report_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="leaderboard run"):
    report.write_report(str(tmp_path / "missing.db"), _suite(), str(tmp_path / "o"))
  ResultsDB(str(tmp_path / "empty.db")).close()
  with pytest.raises(ValueError, match="no evaluation runs"):
    report.write_report(str(tmp_path / "empty.db"), _suite(), str(tmp_path / "o"))


def test_reference_reaches_its_own_target_with_even_seeds(tmp_path):
  suite = suites.from_dict({"name": "even", "version": 1, "seeds": [0, 1], "smoothing_window": 1,
                            "tasks": [{"task": "t", "steps": 3}]})
  with ResultsDB(str(tmp_path / "e.db")) as db:
    db.register_suite(suite)
    _add(db, suite, "adam", "tuned", "t", 0, [3.0, 1.0, 1.0])  # c_T = 1, reaches 2 at step 2.
    _add(db, suite, "adam", "tuned", "t", 1, [3.0, 3.0, 2.0])  # c_T = 2, reaches at step 3.
    lb = report.compute(db, suite)
  assert lb["targets"] == {"t": 2.0}
  adam = lb["entrants"][0]
  assert adam["per_task"]["t"]["steps_to_target"] == 2.5 and adam["reached"] == 1


def test_only_the_latest_config_counts(hand_db):
  db, suite = hand_db
  # A retrained learned optimizer (new fingerprint -> new config) that never reaches.
  for seed in range(3):
    db.add_run(suite=suite, ruleset="self_tuning", optimizer="lo", purpose="eval", task="t1",
               seed=seed, config={"fingerprint": "new"}, steps=4, status="ok",
               train_loss=[9.0, 9.0, 9.0, 9.0], eval_steps=[4], valid_loss=[9.0], wall_time=1.0)
  e = {x["name"]: x for x in report.compute(db, suite)["entrants"]}
  assert e["lo"]["per_task"]["t1"]["seeds"] == 3
  assert e["lo"]["per_task"]["t1"]["steps_to_target"] == math.inf
  assert e["lo"]["per_task"]["t2"]["steps_to_target"] == 1  # Unchanged on t2.
