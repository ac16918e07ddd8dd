"""The AlgoPerf protocol end to end on a tiny task: set-targets, run (resumable),
report with validation curves and leakage marks, the page in headless Chromium."""

import json
import math
import re

import numpy as np
import pytest

from metaopt import inner
from metaopt.eval import entrants, protocol, report, suites
from metaopt.eval.runner import execute_batch
from metaopt.eval import store
from metaopt.eval.store import ResultsDB
from tests.eval import browser, tiny
from tests.eval.test_leaderboard import _ScaledSGD


def _content():
  return {
      "name": "tiny2", "version": 1, "protocol": "algoperf", "seeds": [0, 1, 2],
      "trials": 2, "tuning_seed": 3000, "eval_batches": 2,
      "speedup_reference": ["nadamw", "adam"],
      "target_setting": {"seeds": [1000, 1001, 1002, 1003, 1004], "tuning_seed": 2000,
                         "trials": 3, "baselines": ["adam", "no_such_baseline"]},
      "tasks": [{"task": tiny.LINREG, "steps": 30, "eval_every": 10}]}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
  tiny.register()
  d = tmp_path_factory.mktemp("algoperf")
  path = str(d / "tiny2.json")
  with open(path, "w") as f:
    json.dump(_content(), f)
  db = str(d / "lb.sqlite")
  logs = []
  protocol.set_targets(suites.load(path), db, path, log=logs.append)
  suite = suites.load(path)
  lo = _ScaledSGD()
  learned = entrants.learned("scaled-sgd", lo, lo.init_meta_params(None),
                             {"trained_on": ["test_eval_linreg_family"]})
  stats = protocol.run_leaderboard(suite, ["sgd", learned], db_path=str(d / "runs.sqlite"),
                                      progress=False, log=logs.append)
  yield {"dir": d, "suite": suite, "db": str(d / "runs.sqlite"), "stats": stats,
         "logs": logs, "learned": learned}
  tiny.unregister()


def test_targets_frozen_in_the_suite_file(done):
  suite = done["suite"]
  t = suite.tasks[0].target
  assert t["setter"] == "adam" and len(t["per_seed"]) == 5
  assert t["valid_loss"] == pytest.approx(float(np.median(t["per_seed"])))
  assert any("no_such_baseline" in line for line in done["logs"])


def test_run_plans_studies_and_resumes(done):
  stats = done["stats"]
  # nadamw (reference, added) and sgd: 3 studies x 2 trials; the learned one: 3 runs.
  assert stats["planned"] == 6 + 6 + 3 and stats["trained"] == 15 and stats["errors"] == 0
  again = protocol.run_leaderboard(done["suite"], ["sgd", done["learned"]],
                                      db_path=done["db"], progress=False, log=lambda m: None)
  assert again["trained"] == 0
  with ResultsDB(done["db"], readonly=True) as db:
    runs = db.runs(done["suite"].setup_hash, "trial", optimizer="sgd")
    timings = db.timings(done["suite"].setup_hash)
    compile_times = db.compile_times(done["suite"].setup_hash)
  assert sorted(r["seed"] for r in runs) == [0, 1, 100, 101, 200, 201]
  # Compilation is timed apart (shown, never in the score).
  assert set(compile_times) == set(timings) and all(s > 0 for s in compile_times.values())
  assert {r["steps"] for r in runs} == {40}  # 4/3 of the 30 target-setting steps.
  assert len(timings) == 3 and all(t["per_step"] > 0 for t in timings.values())
  with ResultsDB(done["db"], readonly=True) as db:
    lo = db.runs(done["suite"].setup_hash, "trial", optimizer="scaled-sgd")
  assert {r["steps"] for r in lo} == {90}  # 3x for the self-tuning ruleset.


def test_vmapped_trials_equal_single_runs(done):
  task = tiny.linreg_task()
  e = entrants.baseline("sgd")
  configs = [{"learning_rate": 0.01}, {"learning_rate": 0.1}]
  outs, _ = execute_batch(task, e, configs, [3, 7], 20, 10, 2)
  for cfg, seed, out in zip(configs, [3, 7], outs):
    _, losses, valid = inner.run(task, e.build(cfg, {}, None, total_steps=20), seed, task.data,
                                 20, 10, 2)
    np.testing.assert_allclose(out.train_loss, np.asarray(losses), rtol=1e-5)
    np.testing.assert_allclose(out.valid_loss, np.asarray(valid), rtol=1e-5)
    assert out.valid_error is None  # Regression: no error rate.


def test_error_rate_in_the_in_scan_evaluation():
  import tasks  # pylint: disable=import-outside-toplevel
  task = tasks.get("logistic_mnist1d")
  opt = entrants.baseline("sgd").build({"learning_rate": 0.1}, {}, None)
  _, l3, v3 = inner.run(task, opt, 0, task.data, 20, 10)
  _, l4, v4, err = inner.run(task, opt, 0, task.data, 20, 10, error_rate=True)
  np.testing.assert_allclose(l3, l4)
  np.testing.assert_allclose(v3, v4)
  assert err.shape == (2,) and np.all((err >= 0) & (err <= 1))
  # The same batches as the loss: one evaluation by hand.
  params = task.init(inner.seed_keys(0, 20)[0])
  e0 = inner.evaluate(task, params, task.data, metric=task.error_rate)
  assert 0 <= float(e0) <= 1


def test_report_marks_leakage_and_shows_validation_curves(done):
  out = done["dir"] / "report"
  index = report.write_report(done["db"], done["suite"], str(out))
  data = json.loads((out / "leaderboard.json").read_text())
  assert data["protocol"] == "algoperf"
  e = {x["name"]: x for x in data["entrants"]}
  assert set(e) == {"nadamw", "sgd", "scaled-sgd"}
  assert e["scaled-sgd"]["ineligible"] == {tiny.LINREG: ["family test_eval_linreg_family"]}
  assert e["scaled-sgd"]["scored_tasks"] == 0
  assert e["nadamw"]["speedup_iqm"] is not None and len(e["nadamw"]["speedup_ci"]) == 2
  md = (out / "README.md").read_text()
  assert "INELIGIBLE" in md and "(overlap)" in md and "Targets and budgets" in md
  # Time to target is reported beside steps: steps x the entrant's own time per step.
  assert "## Time to target" in md and "## Compile time of the training step" in md
  rows = [{k: float(r[k]) for k in ("steps_to_target", "seconds_to_target", "seconds_per_step")}
          for x in e.values() for r in x["per_task"].values()]
  reached = [r for r in rows if r["steps_to_target"] < float("inf")]
  assert reached
  for r in reached:
    assert r["seconds_to_target"] == pytest.approx(r["steps_to_target"] * r["seconds_per_step"])
    assert f"{r['seconds_to_target']:.3g}" in md
  html = open(index).read()
  assert 'id="targets"' in html and "(overlap)" in html and 'id="per-task-time"' in html
  assert (out / f"curves_{tiny.LINREG}.png").stat().st_size > 0


@pytest.mark.skipif(browser.chromium() is None, reason="headless Chromium is not installed")
def test_algoperf_page_renders_in_headless_chromium(done, tmp_path):
  index = report.write_report(done["db"], done["suite"], str(tmp_path / "html"))
  dom = browser.dump_dom(index, tmp_path / "profile")
  body = re.search(r"<body[^>]*>", dom).group(0)
  assert 'data-rows="3"' in body
  assert 'data-images-loaded="3/3"' in body  # The validation curves + 2 profiles.
  assert 'alt="' + tiny.LINREG in dom
  assert 'data-sorted-by="B (time)"' in dom


def test_merge_databases(done, tmp_path):
  from metaopt.cli import main as cli_main  # pylint: disable=import-outside-toplevel
  target = str(tmp_path / "merged.sqlite")
  assert cli_main(["leaderboard", "merge", "--db", target, done["db"]]) == 0
  with ResultsDB(target, readonly=True) as a, ResultsDB(done["db"], readonly=True) as b:
    h = done["suite"].setup_hash
    assert len(a.runs(h, "trial")) == len(b.runs(h, "trial")) == 15
    assert a.timings(h) == b.timings(h)
  with ResultsDB(target) as db:
    assert db.merge(done["db"]) == 0  # Nothing new the second time.


def test_merge_a_source_with_an_older_schema(done, tmp_path):
  """A source written before a nullable column existed merges (the column stays empty);
  one that lacks a required column is refused naming the source, not the destination."""
  import shutil  # pylint: disable=import-outside-toplevel
  import sqlite3  # pylint: disable=import-outside-toplevel
  old = str(tmp_path / "old.sqlite")
  shutil.copy(done["db"], old)
  conn = sqlite3.connect(old)
  conn.execute("ALTER TABLE runs DROP COLUMN wall_time")
  conn.commit()
  conn.close()
  target = str(tmp_path / "merged.sqlite")
  with ResultsDB(target) as db:
    assert db.merge(old) == 15
    runs = db.runs(done["suite"].setup_hash, "trial")
  assert len(runs) == 15 and all(math.isnan(r["wall_time"]) for r in runs)
  conn = sqlite3.connect(old)
  conn.execute("ALTER TABLE runs DROP COLUMN package_version")
  conn.commit()
  conn.close()
  with ResultsDB(str(tmp_path / "other.sqlite")) as db:
    with pytest.raises(store.ResultsDBError, match=f"{old} was written by an older metaopt"):
      db.merge(old)
