"""Leaderboard numbers of an AlgoPerf-protocol suite (``v2``) from the results database.

``compute(db, suite)`` returns the same kind of dict as ``metaopt.eval.report.compute``
(``suite``, ``tasks``, ``targets``, ``entrants`` with ``per_task`` metrics, ``curves``,
``notes``) plus ``protocol = "algoperf"`` and, per entrant, the IQM of the normalized
speedup over the reference with a CI that resamples tasks and studies, and the
probability of improvement between every two scored entrants. Definitions:
``metaopt.eval.scoring`` (AlgoPerf section). Every entrant is scored on every task
(B over the full task count); a learned optimizer that meta-trained on a suite
task's dataset or family is **ineligible** for the suite (``entrants.ineligibility``):
listed apart with the reason, never rescored on the other tasks.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

import tasks as task_registry
from metaopt.eval import scoring
from metaopt.eval import suites as S
from metaopt.eval.entrants import Entrant, ineligibility
from metaopt.eval.store import ResultsDB

INF = float("inf")


def entrant_from_row(row: Dict[str, Any]) -> Entrant:
  """The ``Entrant`` (without weights) of a row of the ``optimizers`` table."""
  tr = row["trained_on"]
  if not isinstance(tr, dict):
    tr = {"families": tr or ()}
  return Entrant(name=row["name"], kind=row["kind"], ruleset=row["ruleset"],
                 source=row["source"], trained_on=tuple(tr.get("families", ())),
                 trained_on_datasets=tuple(tr.get("datasets", ())),
                 trained_on_architectures=tuple(tr.get("architectures", ())),
                 trained_on_synthetic_architectures=tuple(tr.get("synthetic_architectures", ())),
                 meta_cost_hours=row["meta_cost_hours"], description=row["description"])


def _task_metadata(names: List[str]) -> Dict[str, Dict[str, Any]]:
  return {n: dict(getattr(task_registry.get(n), "metadata", {}) or {}) for n in names}


def _run_time(r: Dict[str, Any], target: float) -> float:
  if r["status"] == "error" or r["valid_loss"] is None:
    return INF
  return scoring.valid_steps_to_target(r["eval_steps"], r["valid_loss"], target)


def _selected(rs: List[Dict[str, Any]], target: float) -> Dict[str, Any]:
  """The trial a study is represented by: its fastest to target, else its lowest
  best validation loss."""
  def key(r):
    best = scoring.best_valid(r["valid_loss"]) if r["valid_loss"] is not None else INF
    return (_run_time(r, target), best, r["seed"])
  return min(rs, key=key)


def _median_curve(curves: List[np.ndarray]) -> List[float]:
  if not curves:
    return []
  n = min(len(c) for c in curves)
  stack = np.stack([np.where(np.isfinite(c[:n]), c[:n], INF) for c in curves])
  med = np.median(stack, axis=0)
  return np.where(np.isfinite(med), med, np.nan).tolist()


def compute(db: ResultsDB, suite: S.Suite) -> Dict[str, Any]:
  """Scores every entrant with runs of ``suite`` (see module docstring); runs are
  read under ``suite.setup_hash`` and scored against the targets in ``suite``."""
  runs = db.runs(suite.setup_hash, "trial")  # Runs do not depend on the targets.
  timings = db.timings(suite.setup_hash)
  compile_times = db.compile_times(suite.setup_hash)
  names = [t.task for t in suite.tasks]
  targets = {t.task: float((t.target or {}).get("valid_loss", float("nan"))) for t in suite.tasks}
  meta = {(o["name"], o["ruleset"]): o for o in db.optimizers()}
  grouped: Dict[tuple, Dict[str, List[Dict[str, Any]]]] = {}
  for r in runs:
    grouped.setdefault((r["optimizer"], r["ruleset"]), {}).setdefault(r["task"], []).append(r)
  task_meta = _task_metadata(names) if grouped else {}
  entries, curves, study_times = [], {t: {} for t in names}, {}
  for (name, ruleset), by_task in sorted(grouped.items()):
    m = meta.get((name, ruleset))
    ent = entrant_from_row(m) if m else Entrant(name, "baseline", ruleset, name)
    per_task, st_times = {}, {}
    for st in suite.tasks:
      rs = by_task.get(st.task, [])
      target = targets[st.task]
      studies = {}
      for r in rs:
        studies.setdefault(r["seed"] // S.STUDY_STRIDE, []).append(r)
      times = [scoring.study_time(_run_time(r, target) for r in studies.get(s, []))
               for s in suite.seeds]
      st_times[st.task] = times
      sel = [_selected(studies[s], target) for s in suite.seeds if studies.get(s)]
      steps = scoring.median_time(times) if rs else INF
      per_step = timings.get((name, ruleset, st.task), {}).get("per_step", float("nan"))
      valid = [r["valid_loss"] for r in sel if r["valid_loss"] is not None]
      errs = [r["valid_error"] for r in sel if r.get("valid_error") is not None]
      per_task[st.task] = {
          "steps_to_target": steps,
          "seconds_to_target": scoring.seconds_to_target(steps, per_step, 1),
          "seconds_per_step": per_step,
          "compile_seconds": compile_times.get((name, ruleset, st.task), float("nan")),
          "budget": suite.budget(st, ruleset),
          "final_valid": scoring.nanmedian_or_nan([v[-1] for v in valid]),
          "best_valid": scoring.nanmedian_or_nan([scoring.best_valid(v) for v in valid]),
          "best_error": scoring.nanmedian_or_nan([np.nanmin(e) if np.any(np.isfinite(e))
                                                  else np.nan for e in errs]),
          "seeds": len(studies), "trials": len(rs),
          "diverged": sum(r["status"] == "diverged" for r in rs),
          "errors": sum(r["status"] == "error" for r in rs)}
      if sel and sel[0]["eval_steps"] is not None:
        curves[st.task][name] = {"x": np.asarray(sel[0]["eval_steps"]).tolist(),
                                 "y": _median_curve([np.asarray(v) for v in valid])}
    reasons = ineligibility(ent, suite, task_meta)
    study_times[(name, ruleset)] = st_times
    entries.append({
        "name": name, "ruleset": ruleset, "kind": ent.kind, "description": ent.description,
        "trained_on": list(ent.trained_on), "trained_on_datasets": list(ent.trained_on_datasets),
        "trained_on_architectures": list(ent.trained_on_architectures),
        "meta_cost_hours": ent.meta_cost_hours, "ineligible": reasons,
        "per_task": per_task,
        "complete": all(per_task[t]["seeds"] > 0 for t in names)})

  def key(e):
    return e["name"] + "|" + e["ruleset"]

  eligible = [e for e in entries if not e["ineligible"]]
  # B over the full task count, among eligible entrants only: an ineligible one
  # neither scores nor sets a task's best time.
  for metric, label in (("seconds_to_target", "time"), ("steps_to_target", "steps")):
    def times(group):
      return {key(e): {t: e["per_task"][t][metric] for t in names} for e in group}
    all_scores = scoring.benchmark_scores(times(eligible), suite.r_max)
    for ruleset in sorted({e["ruleset"] for e in eligible}):
      group = [e for e in eligible if e["ruleset"] == ruleset]
      for k, (b, ratios) in scoring.benchmark_scores(times(group), suite.r_max).items():
        e = next(x for x in group if key(x) == k)
        e[f"score_{label}"], e[f"ratios_{label}"] = b, ratios
        e[f"score_{label}_all"], e[f"ratios_{label}_all"] = all_scores[k]
  for e in entries:
    if e["ineligible"]:
      for label in ("time", "steps"):
        e[f"score_{label}"] = e[f"score_{label}_all"] = None
        e[f"ratios_{label}"] = e[f"ratios_{label}_all"] = {}

  ref = S.reference_name(suite)
  ref_e = next((e for e in entries if e["name"] == ref and e["ruleset"] == "tuned"), None)
  notes = []
  if ref_e is None:
    notes.append(f"No runs of tuned {ref} (the speedup reference): no speedups.")
  speedup_matrix = {}
  for e in entries:
    missing = [t for t in names if e["per_task"][t]["seeds"] == 0]
    if missing:
      notes.append(f"{e['name']} has no runs yet on {missing} (counted as missed).")
    e["reached"] = sum(math.isfinite(e["per_task"][t]["steps_to_target"]) for t in names)
    e["scored_tasks"] = 0 if e["ineligible"] else len(names)
    e["speedup_iqm"] = e["speedup_ci"] = e["frac_faster"] = None
    if ref_e is None or e["ineligible"]:
      continue
    cols = [scoring.normalized_speedups(
        study_times[(e["name"], e["ruleset"])][t], ref_e["per_task"][t]["steps_to_target"],
        suite.budget(suite.task(t), "tuned")) for t in names]
    mat = np.stack(cols, axis=1)
    speedup_matrix[key(e)] = mat
    point, lo, hi = scoring.bootstrap_ci(mat, scoring.iqm, suite.bootstrap_reps,
                                                  suite.bootstrap_seed)
    e["speedup_iqm"], e["speedup_ci"] = point, [lo, hi]
    e["frac_faster"] = float(np.mean([e["per_task"][t]["steps_to_target"]
                                      < ref_e["per_task"][t]["steps_to_target"]
                                      for t in names]))
  # Head to head: P(row's normalized speedup > column's), tasks averaged.
  improvement = {a: {b: scoring.probability_of_improvement(ma, mb)
                     for b, mb in speedup_matrix.items() if b != a}
                 for a, ma in speedup_matrix.items()}

  def rank(e):
    b = e.get("score_time")
    return (bool(e["ineligible"]), e["ruleset"] != "tuned",
            -(b if b is not None and not math.isnan(b) else -1.0), e["name"])

  entries.sort(key=rank)
  return {"protocol": "algoperf",
          "suite": {"name": suite.name, "version": suite.version, "hash": suite.hash,
                    "id": suite.id, "r_max": suite.r_max, "reference": ref,
                    "seeds": list(suite.seeds), "trials": suite.trials,
                    "target_seeds": list(suite.target_seeds),
                    "budget_external": str(suite.budget_external),
                    "budget_self_tuning": str(suite.budget_self_tuning)},
          "tasks": [{"task": t.task, "steps": t.steps, "target": targets[t.task],
                     "target_error": (t.target or {}).get("valid_error"),
                     "setter": (t.target or {}).get("setter"),
                     "budget_external": suite.budget(t, "tuned"),
                     "budget_self_tuning": suite.budget(t, "self_tuning"),
                     "dataset": task_meta.get(t.task, {}).get("dataset"),
                     "architecture": task_meta.get(t.task, {}).get("architecture")}
                    for t in suite.tasks],
          "targets": targets, "entrants": entries, "curves": curves, "notes": notes,
          "probability_of_improvement": improvement}
