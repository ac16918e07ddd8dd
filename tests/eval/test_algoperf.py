"""The AlgoPerf protocol of suite v2: targets, budgets, studies, IQM/bootstrap, leakage.

Every expectation below is computed by hand in the comments (or by an independent
implementation: ``scipy.stats.trim_mean``).
"""

import fractions
import math

import numpy as np
import pytest
from scipy import stats

from metaopt.eval import algoperf_scores, scoring
from metaopt.eval import entrants as E
from metaopt.eval import suites as S
from metaopt.eval.store import ResultsDB

INF = math.inf


def _content(**kw):
  content = {
      "name": "t2", "version": 1, "protocol": "algoperf", "seeds": [0, 1, 2], "trials": 2,
      "tuning_seed": 3000,
      "target_setting": {"seeds": [1000, 1001, 1002, 1003, 1004], "tuning_seed": 2000},
      "tasks": [{"task": "quadratic_d10_cond10", "steps": 30, "eval_every": 10,
                 "target": {"valid_loss": 2.0}},
                {"task": "rosenbrock_d2", "steps": 30, "eval_every": 10,
                 "target": {"valid_loss": 1.0}}]}
  content.update(kw)
  return content


def test_target_is_lowest_median_of_best_validation_loss_over_setters():
  per_setter = {
      # Best per seed: 2, 1.5, 2.0, 5, 1.0 -> median 2.0.
      "adam": [[3, 2, 2.5], [4, 1.5, 2], [2.2, 2.1, 2.0], [5, 5, 5], [1.0, 3, 3]],
      # Best per seed: 1.8, 1.9, 2.5, 2.6, 1.7 (NaN ignored) -> median 1.9.
      "nadamw": [[1.8, 2], [1.9, np.nan], [2.5, 3], [2.6, 2.7], [9, 1.7]],
  }
  t = scoring.target_from_runs(per_setter)
  assert t["setter"] == "nadamw"
  assert t["valid_loss"] == pytest.approx(1.9)
  assert t["medians"] == pytest.approx({"adam": 2.0, "nadamw": 1.9})


def test_budgets_are_4_3_and_3_times_the_target_setting_steps():
  suite = S.from_dict(_content(tasks=[{"task": "a", "steps": 300, "eval_every": 20}]))
  assert suite.protocol == "algoperf"
  st = suite.tasks[0]
  assert suite.budget(st, "tuned") == 400
  assert suite.budget(st, "self_tuning") == 900
  with pytest.raises(S.SuiteError, match="whole number"):
    S.from_dict(_content(tasks=[{"task": "a", "steps": 301, "eval_every": 1}]))
  with pytest.raises(S.SuiteError, match="divide"):  # 400 % 300 != 0.
    S.from_dict(_content(tasks=[{"task": "a", "steps": 300, "eval_every": 300}]))


def test_seeds_must_be_separate_and_targets_are_covered_by_the_hash():
  with pytest.raises(S.SuiteError, match="overlap"):
    S.from_dict(_content(target_setting={"seeds": [1, 1001, 1002, 1003, 1004]}))
  with pytest.raises(S.SuiteError, match=">= 5"):
    S.from_dict(_content(target_setting={"seeds": [1000, 1001]}))
  a, b = S.from_dict(_content()), _content()
  b["tasks"][0]["target"] = {"valid_loss": 2.5}
  b = S.from_dict(b)
  assert a.hash != b.hash and a.setup_hash == b.setup_hash


def test_study_is_its_fastest_trial_then_median_over_studies():
  studies = [[INF, 40, 60], [80, INF, INF], [INF, INF, INF]]
  times = [scoring.study_time(s) for s in studies]
  assert times == [40, 80, INF]
  assert scoring.median_time(times) == 80
  # Two of three studies missing -> the task is missed.
  assert scoring.median_time([40, INF, INF]) == INF
  # Steps to target: the first evaluation step at or below the target.
  assert scoring.valid_steps_to_target([10, 20, 30], [3.0, 1.9, 1.0], 2.0) == 20
  assert scoring.valid_steps_to_target([10, 20, 30], [3.0, np.nan, 2.5], 2.0) == INF


def test_iqm_matches_scipy_trim_mean_and_hand_values():
  assert scoring.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
  x = np.random.default_rng(0).normal(size=(7, 5))
  assert scoring.iqm(x) == pytest.approx(stats.trim_mean(x.ravel(), 0.25))


def test_stratified_bootstrap_ci_within_tasks():
  # Constant columns: every resample is the same matrix, so the CI is the point.
  s = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
  point, lo, hi = scoring.bootstrap_ci(s, reps=200, resample_tasks=False)
  assert point == lo == hi == pytest.approx(2.5)
  # One task, runs {0, 10}: resamples (0,0), (0,10), (10,0), (10,10), each with
  # probability 1/4, give means 0, 5, 5, 10: the 95% interval is [0, 10].
  point, lo, hi = scoring.bootstrap_ci(np.array([[0.0], [10.0]]), reps=4000,
                                       resample_tasks=False)
  assert (point, lo, hi) == (5.0, 0.0, 10.0)
  # Resampling is within tasks: a task whose runs all agree never moves.
  s = np.array([[0.0, 7.0], [10.0, 7.0]])
  reps = [scoring.bootstrap_ci(s, lambda m: float(m[:, 1].mean()), 50, seed,
                               resample_tasks=False)[1]
          for seed in range(3)]
  assert reps == [7.0, 7.0, 7.0]


def test_normalized_speedup_counts_misses_as_zero():
  sp = scoring.normalized_speedups([50, INF, 200], reference=100, reference_fallback=400)
  np.testing.assert_allclose(sp, [2.0, 0.0, 0.5])
  # A reference that missed is replaced by its budget (a lower bound on its time).
  np.testing.assert_allclose(scoring.normalized_speedups([100], INF, 400), [4.0])


def test_benchmark_scores_divide_by_the_full_task_count():
  # Hand computed, r_max = 4: t1 best 5 (b), t2 best 20 (a), t3 reached by a only.
  # a: r = (2, 1, 1)     -> B = ((4-2) + (4-1) + (4-1)) / 3 / 3 = 8/9
  # b: r = (1, 2, inf)   -> B = ((4-1) + (4-2) + 0) / 3 / 3 = 5/9 (the miss counts)
  times = {"a": {"t1": 10, "t2": 20, "t3": 7}, "b": {"t1": 5, "t2": 40, "t3": INF}}
  out = scoring.benchmark_scores(times, r_max=4.0)
  assert out["a"][0] == pytest.approx(8 / 9)
  assert out["b"][0] == pytest.approx(5 / 9)
  assert out["b"][1] == {"t1": 1.0, "t2": 2.0, "t3": INF}


def test_bootstrap_ci_resamples_tasks():
  # Two tasks, every run equal within a task: resampling runs alone gives a
  # zero-width interval; resampling tasks gives the spread between them.
  s = np.array([[1.0, 3.0]] * 4)
  point, lo, hi = scoring.bootstrap_ci(s, reps=2000, seed=0)
  assert point == pytest.approx(2.0)
  assert lo == pytest.approx(1.0) and hi == pytest.approx(3.0)
  _, lo_r, hi_r = scoring.bootstrap_ci(s, reps=500, resample_tasks=False)
  assert lo_r == hi_r == pytest.approx(2.0)


def test_probability_of_improvement_hand_computed():
  # Task 1: x = (3, 1) vs y = (2, 2): 3>2, 3>2, 1<2, 1<2 -> 2/4 = 0.5.
  # Task 2: x = (5, 5) vs y = (5, 1): 5=5 (0.5), 5>1, 5=5 (0.5), 5>1 -> 3/4.
  x = np.array([[3.0, 5.0], [1.0, 5.0]])
  y = np.array([[2.0, 5.0], [2.0, 1.0]])
  assert scoring.probability_of_improvement(x, y) == pytest.approx((0.5 + 0.75) / 2)
  assert scoring.probability_of_improvement(y, x) == pytest.approx(1 - 0.625)
  with pytest.raises(ValueError, match="same tasks"):
    scoring.probability_of_improvement(x, y[:, :1])


def _learned(families=(), datasets=(), archs=()):
  return E.Entrant("lo", "learned", "self_tuning", "lo", trained_on=tuple(families),
                   trained_on_datasets=tuple(datasets), trained_on_architectures=tuple(archs))


def test_leakage_by_dataset_and_family_not_architecture():
  ent = _learned(["mlp_digits_w32_d2_family"], ["digits"], ["mlp"])
  assert E.leakage(ent, "conv_digits_c8x2", (), {"dataset": "digits",
                                                 "architecture": "conv"}) == ["dataset digits"]
  # The architecture class alone is no overlap.
  assert E.leakage(ent, "mlp_fmnist_w128_d2", (), {"dataset": "fashion_mnist",
                                                   "architecture": "mlp"}) == []
  assert E.leakage(ent, "mlp_digits_w32_d2", (), {"dataset": "digits", "architecture": "mlp"}) \
      == ["family mlp_digits_w32_d2_family", "dataset digits"]
  # Generated problems of one class overlap whatever the family names.
  quad = E.Entrant("lo", "learned", "self_tuning", "lo", trained_on=("quadratic_noisy_family",),
                   trained_on_synthetic_architectures=("quadratic",))
  assert E.leakage(quad, "quadratic_d100_cond10000", (), {"dataset": "synthetic",
                                                          "architecture": "quadratic"}) == \
      ["generated quadratic problems"]
  assert E.leakage(quad, "rosenbrock_d10", (), {"dataset": "synthetic",
                                                "architecture": "classic_function"}) == []
  # Generated data is no shared dataset.
  synth = _learned(datasets=["synthetic"])
  assert E.leakage(synth, "rosenbrock_d10", (), {"dataset": "synthetic"}) == []
  # Baselines never leak.
  assert E.leakage(E.baseline("adam"), "mlp_digits_w32_d2", (), {"dataset": "digits"}) == []


def test_old_weight_files_derive_datasets_and_architectures_from_families():
  data, archs, synthetic = E.derived_training_classes(["mlp_digits_w32_d2_family",
                                                       "quadratic_family", "no_such_family"])
  assert data == ("digits", "synthetic") and archs == ("mlp", "quadratic")
  assert synthetic == ("quadratic",)
  ent = E.parse("mlp-digits-v1")  # Its header lists only `trained_on`.
  assert "digits" in ent.trained_on_datasets and "mlp" in ent.trained_on_architectures


def _add(db, suite, name, ruleset, task, seed, valid, kind_steps=(10, 20, 30, 40)):
  db.add_run(suite=suite, ruleset=ruleset, optimizer=name, purpose="trial", task=task,
             seed=seed, config={"i": seed}, steps=kind_steps[-1], status="ok",
             train_loss=np.ones(kind_steps[-1]), eval_steps=np.asarray(kind_steps),
             valid_loss=np.asarray(valid, np.float64))


def test_scores_from_the_database(tmp_path):
  suite = S.from_dict(_content())
  stored = S.Suite(**{**{f: getattr(suite, f) for f in suite.__dataclass_fields__},
                      "hash": suite.setup_hash})
  target = {"quadratic_d10_cond10": 2.0, "rosenbrock_d2": 1.0}
  # Reference nadamw: trials (2 per study); hits at 20 | 30 | 20 on task 1.
  ref_curves = {0: ([3, 1.9, 1, 1], [3, 3, 3, 3]), 1: ([3, 3, 2, 1], [9, 9, 9, 9]),
                2: ([3, 3, 3, 3], [4, 2.0, 1, 1])}
  with ResultsDB(str(tmp_path / "db.sqlite")) as db:
    db.register_suite(stored)
    db.upsert_optimizer("nadamw", "tuned", "baseline", "nadamw")
    db.upsert_optimizer("lo", "self_tuning", "learned", "lo",
                        {"families": [], "datasets": ["synthetic"],
                         "architectures": ["classic_function"]})
    for s, (c0, c1) in ref_curves.items():
      for task in target:
        _add(db, stored, "nadamw", "tuned", task, 100 * s, c0)
        _add(db, stored, "nadamw", "tuned", task, 100 * s + 1, c1)
    db.upsert_optimizer("leaky", "self_tuning", "learned", "leaky",
                        {"families": ["rosenbrock_d2"], "datasets": [], "architectures": []})
    for s in range(3):  # lo: task 1 at step 20, task 2 at step 10, in every study.
      _add(db, stored, "lo", "self_tuning", "quadratic_d10_cond10", 100 * s, [3, 1, 1, 1])
      _add(db, stored, "lo", "self_tuning", "rosenbrock_d2", 100 * s, [0.5, 0.5, 0.5, 0.5])
      for task in target:  # leaky: fastest everywhere, but meta-trained on a suite task.
        _add(db, stored, "leaky", "self_tuning", task, 100 * s, [0.1] * 4)
    lb = algoperf_scores.compute(db, suite)
  by = {e["name"]: e for e in lb["entrants"]}
  ref = by["nadamw"]["per_task"]
  # quadratic (target 2): studies 20, 30, 20 -> median 20.
  assert ref["quadratic_d10_cond10"]["steps_to_target"] == 20
  # rosenbrock (target 1): study 0 trial 0 hits at 30, study 1 at 40, study 2 trial 1
  # at 30 -> median 30.
  assert ref["rosenbrock_d2"]["steps_to_target"] == 30
  lo, leaky = by["lo"], by["leaky"]
  assert lo["per_task"]["quadratic_d10_cond10"]["steps_to_target"] == 20
  # The architecture class alone is no overlap: lo is scored on every task.
  assert lo["ineligible"] == {} and lo["scored_tasks"] == 2
  # leaky is listed apart with the reason, unscored, and sets no best time.
  assert leaky["ineligible"] == {"rosenbrock_d2": ["family rosenbrock_d2"]}
  assert leaky["score_steps"] is None and leaky["speedup_iqm"] is None
  assert lb["entrants"][-1]["name"] == "leaky"
  # B over both tasks among eligible entrants (hand computed, r_max 4):
  # quadratic best 20 (nadamw, lo), rosenbrock best 10 (lo): nadamw r = (1, 3).
  assert by["nadamw"]["score_steps_all"] == pytest.approx(((4 - 1) + (4 - 3)) / 2 / 3)
  assert lo["score_steps_all"] == pytest.approx(1.0)
  # Speedups per study: quadratic 20/20 = 1, rosenbrock 30/10 = 3; IQM of
  # (1, 1, 1, 3, 3, 3) = mean(1, 1, 3, 3) = 2; resampling tasks spans [1, 3].
  assert lo["speedup_iqm"] == pytest.approx(2.0)
  assert lo["speedup_ci"] == pytest.approx([1.0, 3.0])
  # P(lo > nadamw): quadratic (1,1,1) vs (1, 2/3, 1) -> 2/3; rosenbrock 3 > all -> 1.
  assert lb["probability_of_improvement"]["lo|self_tuning"]["nadamw|tuned"] == \
      pytest.approx((2 / 3 + 1) / 2)


def test_suite_v2_shape():
  """v2: >= 10 tasks over >= 5 kinds and >= 4 datasets, a long horizon, every target
  frozen (from the target-setting runs) and seeds separate."""
  import tasks  # pylint: disable=import-outside-toplevel
  suite = S.load("v2")
  assert suite.protocol == "algoperf" and len(suite.tasks) >= 10
  meta = [dict(tasks.get(t.task).metadata) for t in suite.tasks]
  assert len({m["architecture"] for m in meta}) >= 5
  assert len({m["dataset"] for m in meta}) >= 4
  assert max(suite.budget(t, "tuned") for t in suite.tasks) >= 2000
  for t in suite.tasks:
    assert t.target["setter"] in suite.target_baselines
    assert t.target["valid_loss"] == pytest.approx(float(np.median(t.target["per_seed"])))
  assert not set(suite.target_seeds) & set(suite.seeds)


def test_suite_v3_shape():
  """v3: >= 12 workloads, none below 500 target-setting steps, a >= 0.3M-parameter LM
  run >= 1,000 steps, a BatchNorm net with model state, an autoencoder, small tabular
  data, a >= 3,000-step run; budgets 4/3 and 1.5 x 4/3; NAdamW sets the targets."""
  import tasks  # pylint: disable=import-outside-toplevel
  suite = S.load("v3")
  assert len(suite.tasks) >= 12 and suite.sealed
  assert min(t.steps for t in suite.tasks) >= 500
  got = {t.task: tasks.get(t.task) for t in suite.tasks}
  lm = [n for n, t in got.items() if t.metadata["architecture"] == "transformer"]
  assert lm and got[lm[0]].metadata["num_params"] >= 300_000
  assert suite.task(lm[0]).steps >= 1000
  assert any(t.stateful for t in got.values())
  assert any(t.metadata["architecture"] == "autoencoder" for t in got.values())
  assert "breast_cancer" in {t.metadata["dataset"] for t in got.values()}
  assert max(t.steps for t in suite.tasks) >= 3000
  assert suite.budget_external == fractions.Fraction(4, 3)
  assert suite.budget_self_tuning == fractions.Fraction(3, 2) * suite.budget_external
  assert suite.target_baselines == ("nadamw",)
