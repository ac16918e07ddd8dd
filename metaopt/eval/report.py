"""Leaderboard tables and reports from the results database.

``compute(db, suite)`` turns the stored evaluation runs of one suite version into
per-task metrics and AlgoPerf scores (definitions in ``metaopt.eval.scoring``);
``format_table`` prints it; ``write_report`` writes Markdown, CSV, JSON, PNG plots
(learning curves per task, performance profiles) and a static HTML page with a
sortable table (inline JS, no external resources).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import platform
from typing import Any, Dict, List, Optional

import jax
import numpy as np

from metaopt.eval import algoperf_scores, scoring
from metaopt.eval import suites as S
from metaopt.eval.entrants import Entrant, leakage
from metaopt.eval.store import ResultsDB

INF = float("inf")


def _entrant_from_row(row: Dict[str, Any]) -> Entrant:
  return Entrant(name=row["name"], kind=row["kind"], ruleset=row["ruleset"],
                 source=row["source"], trained_on=tuple(row["trained_on"]),
                 meta_cost_hours=row["meta_cost_hours"], description=row["description"])


def compute(db: ResultsDB, suite: S.Suite) -> Dict[str, Any]:
  """Scores every entrant with evaluation runs for ``suite`` (this exact version).

  Returns a JSON-friendly dict: ``suite``, ``tasks``, ``targets`` (per task),
  ``entrants`` (list, best first within each ruleset; each with ``per_task`` metrics
  and scores) and ``curves`` (per task, per entrant: median smoothed curve).
  """
  if suite.algoperf:
    return algoperf_scores.compute(db, suite)
  runs = db.runs(suite.hash, "eval")
  task_names = [t.task for t in suite.tasks]
  meta = {(o["name"], o["ruleset"]): o for o in db.optimizers()}
  grouped: Dict[tuple, Dict[str, List[Dict[str, Any]]]] = {}
  for r in runs:
    grouped.setdefault((r["optimizer"], r["ruleset"]), {}).setdefault(r["task"], []).append(r)
  # Only the latest config of an optimizer counts on each task (a retrained learned
  # optimizer file or a re-tuned baseline leaves older runs in the database).
  for by_task in grouped.values():
    for t, rs in by_task.items():
      latest = max(rs, key=lambda r: r["id"])["config"]
      by_task[t] = [r for r in rs if r["config"] == latest]
  w = suite.smoothing_window

  def curve(r):
    if r["status"] == "error" or r["train_loss"] is None:
      return np.full(next(t.steps for t in suite.tasks if t.task == r["task"]), INF)
    return scoring.smoothed_curve(r["train_loss"], w)

  ref = grouped.get((suite.reference, "tuned"), {})
  targets = {t: scoring.target_loss([curve(r)[-1] for r in ref.get(t, [])])
             for t in task_names}
  notes = []
  if not ref:
    notes.append(f"No runs of tuned {suite.reference} (the reference): no targets, "
                 "steps-to-target are all infinite.")

  entries, curves = [], {t: {} for t in task_names}
  for (name, ruleset), by_task in sorted(grouped.items()):
    m = meta.get((name, ruleset))
    ent = _entrant_from_row(m) if m else Entrant(name, "baseline", ruleset, name)
    per_task = {}
    for st in suite.tasks:
      rs = by_task.get(st.task, [])
      cs = [curve(r) for r in rs]
      steps = [scoring.steps_to_target(c, targets[st.task]) for c in cs]
      secs = [scoring.seconds_to_target(s, r["wall_time"], st.steps) for s, r in zip(steps, rs)]
      trains = [r["train_loss"] if r["train_loss"] is not None else np.full(st.steps, np.nan)
                for r in rs]
      valid = [r["valid_loss"] if r["valid_loss"] is not None else np.array([np.nan]) for r in rs]
      per_task[st.task] = {
          "steps_to_target": scoring.median_time(steps),
          "seconds_to_target": scoring.median_time(secs),
          # Trailing mean over the last `w` steps (m_T), and running min (c_T).
          "final_train": scoring.nanmedian_or_nan([np.mean(x[-w:]) for x in trains]),
          "best_train": scoring.nanmedian_or_nan([c[-1] for c in cs]),
          "final_valid": scoring.nanmedian_or_nan([v[-1] for v in valid]),
          "best_valid": scoring.nanmedian_or_nan([np.nanmin(v) if np.any(np.isfinite(v)) else np.nan
                                                  for v in valid]),
          "seeds": len(rs),
          "diverged": sum(r["status"] == "diverged" for r in rs),
          "errors": sum(r["status"] == "error" for r in rs),
          "wall_time": scoring.nanmedian_or_nan([r["wall_time"] for r in rs]),
      }
      if cs:
        med = np.median(np.stack(cs), axis=0)  # inf (failed seeds) sorts last.
        curves[st.task][name] = np.where(np.isfinite(med), med, np.nan).tolist()
    leaks = {st.task: leakage(ent, st.task, st.families) for st in suite.tasks}
    leaks = {k: v for k, v in leaks.items() if v}
    entries.append({
        "name": name, "ruleset": ruleset, "kind": ent.kind, "description": ent.description,
        "trained_on": list(ent.trained_on), "meta_cost_hours": ent.meta_cost_hours,
        "leakage": leaks, "per_task": per_task,
        "complete": all(per_task[t]["seeds"] > 0 for t in task_names)})

  ref_steps = {t: ref_e["per_task"][t]["steps_to_target"] for ref_e in entries
               if ref_e["name"] == suite.reference and ref_e["ruleset"] == "tuned"
               for t in task_names}
  ref_secs = {t: ref_e["per_task"][t]["seconds_to_target"] for ref_e in entries
              if ref_e["name"] == suite.reference and ref_e["ruleset"] == "tuned"
              for t in task_names}

  def score(group, key):
    times = {e["name"] + "|" + e["ruleset"]: {t: e["per_task"][t][key] for t in task_names}
             for e in group}
    ratios = scoring.performance_ratios(times)
    return {k: (scoring.benchmark_score(list(v.values()), suite.r_max), v)
            for k, v in ratios.items()}

  for key, label in (("steps_to_target", "steps"), ("seconds_to_target", "time")):
    all_scores = score(entries, key)
    for ruleset in sorted({e["ruleset"] for e in entries}):
      group = [e for e in entries if e["ruleset"] == ruleset]
      for k, (b, ratios) in score(group, key).items():
        e = next(x for x in group if x["name"] + "|" + x["ruleset"] == k)
        e[f"score_{label}"] = b
        e[f"ratios_{label}"] = ratios
        e[f"score_{label}_all"] = all_scores[k][0]
        e[f"ratios_{label}_all"] = all_scores[k][1]
  for e in entries:
    t_opt = {t: e["per_task"][t]["steps_to_target"] for t in task_names}
    sp = scoring.speedups(t_opt, ref_steps)
    e["speedup_geomean"] = scoring.geomean_speedup(sp)
    e["speedup_time_geomean"] = scoring.geomean_speedup(scoring.speedups(
        {t: e["per_task"][t]["seconds_to_target"] for t in task_names}, ref_secs))
    e["frac_faster"] = scoring.fraction_faster(t_opt, ref_steps)
    e["reached"] = sum(math.isfinite(x) for x in t_opt.values())
  entries.sort(key=lambda e: (e["ruleset"] != "tuned", -_nan_to(e.get("score_steps"), -1.0),
                              e["name"]))
  return {"suite": {"name": suite.name, "version": suite.version, "hash": suite.hash,
                    "id": suite.id, "r_max": suite.r_max, "smoothing_window": w,
                    "reference": suite.reference,
                    "seeds": sorted({r["seed"] for r in runs})},
          "tasks": [{"task": t.task, "steps": t.steps, "target": targets[t.task]}
                    for t in suite.tasks],
          "targets": targets, "entrants": entries, "curves": curves, "notes": notes}


def _nan_to(x, default):
  return default if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _fmt(x, digits=3) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    if math.isnan(x):
      return "-"
    if math.isinf(x):
      return "inf"
    return f"{x:.{digits}g}"
  return str(x)


SUMMARY_COLUMNS = [
    ("optimizer", "optimizer"), ("ruleset", "ruleset"), ("kind", "kind"),
    ("score_steps", "B (steps)"), ("score_time", "B (time)"),
    ("score_steps_all", "B all (steps)"), ("speedup_geomean", "speedup vs Adam"),
    ("frac_faster", "faster than Adam"), ("reached", "reached"),
    ("meta_cost_hours", "meta-train h"), ("leak", "leakage")]


ALGOPERF_COLUMNS = [
    ("optimizer", "optimizer"), ("ruleset", "ruleset"), ("kind", "kind"),
    ("score_time", "B (time)"), ("score_steps", "B (steps)"),
    ("score_time_all", "B all (time)"), ("speedup_iqm", "speedup IQM"),
    ("speedup_ci", "95% CI (tasks+runs)"), ("frac_faster", "faster than ref"),
    ("reached", "reached"), ("meta_cost_hours", "meta-train h"), ("leak", "eligibility")]


def columns(lb: Dict[str, Any]) -> List[tuple]:
  """The summary columns of ``lb``'s protocol."""
  return ALGOPERF_COLUMNS if lb.get("protocol") == "algoperf" else SUMMARY_COLUMNS


def summary_rows(lb: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One flat dict per entrant with the ``columns(lb)`` keys."""
  n = len(lb["tasks"])
  rows = []
  for e in lb["entrants"]:
    row = {k: e.get(k) for k, _ in columns(lb)}
    row["optimizer"] = e["name"]
    row["reached"] = f"{e['reached']}/{e.get('scored_tasks', n)}"
    if e.get("speedup_ci"):
      row["speedup_ci"] = f"[{_fmt(e['speedup_ci'][0])}, {_fmt(e['speedup_ci'][1])}]"
    if lb.get("protocol") == "algoperf":
      row["leak"] = ("INELIGIBLE: " + "; ".join(f"{t} ({', '.join(f)})"
                                                for t, f in e["ineligible"].items())
                     if e["ineligible"] else ("eligible" if e["kind"] == "learned" else ""))
    else:
      row["leak"] = ("OVERLAP: " + "; ".join(f"{t} ({', '.join(f)})"
                                             for t, f in e["leakage"].items())
                     if e["leakage"] else ("none" if e["kind"] == "learned" else ""))
    rows.append(row)
  return rows


def format_table(lb: Dict[str, Any]) -> str:
  """Plain-text leaderboard (``metaopt leaderboard show``)."""
  rows = summary_rows(lb)
  cols = columns(lb)
  header = [h for _, h in cols]
  cells = [[_fmt(r[k]) if k != "optimizer" else r[k] for k, _ in cols] for r in rows]
  widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
            for i, h in enumerate(header)]
  lines = [f"Leaderboard {lb['suite']['id']} (hash {lb['suite']['hash']}), "
           f"{len(lb['tasks'])} tasks, seeds {lb['suite']['seeds']}, r_max={lb['suite']['r_max']}",
           "  ".join(h.ljust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
  lines += lb["notes"]
  return "\n".join(lines)


def _markdown_table(header: List[str], rows: List[List[str]]) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(out)


def per_task_rows(lb: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One flat dict per (entrant, task) with every per-task metric."""
  out = []
  for e in lb["entrants"]:
    for t in lb["tasks"]:
      m = e["per_task"][t["task"]]
      out.append({"optimizer": e["name"], "ruleset": e["ruleset"], "task": t["task"],
                  "target": t["target"], **m,
                  "leakage": "; ".join(e["leakage"].get(t["task"], [])),
                  "ratio_steps": e.get("ratios_steps", {}).get(t["task"]),
                  "ratio_time": e.get("ratios_time", {}).get(t["task"])})
  return out


def machine_description() -> str:
  return (f"{platform.platform()}, {os.cpu_count()} CPU cores, python "
          f"{platform.python_version()}, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}")


def _finish(plt, fig, ax, out_dir: str, file_name: str) -> str:
  """Grid, legend outside the axes, saved as ``out_dir/file_name``; returns the name."""
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, file_name))
  plt.close(fig)
  return file_name


def _plots(lb: Dict[str, Any], out_dir: str) -> Dict[str, str]:
  """PNG per task (median running-min smoothed train loss) + performance profiles."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = [e["name"] + ("" if e["ruleset"] == "tuned" else " [self]") for e in lb["entrants"]]
  cmap = plt.get_cmap("tab20")
  colors = {n: cmap(i % 20) for i, n in enumerate(names)}
  paths = {}
  algoperf = lb.get("protocol") == "algoperf"
  for t in lb["tasks"]:
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=90)
    for e, label in zip(lb["entrants"], names):
      c = lb["curves"][t["task"]].get(e["name"], [])
      x = None
      if isinstance(c, dict):  # AlgoPerf: validation loss at the evaluation steps.
        x, c = np.asarray(c["x"], np.float64), c["y"]
      c = np.asarray(c, np.float64)
      if x is None:
        x = np.arange(1, len(c) + 1)
      if c.size and np.any(np.isfinite(c) & (c > 0)):
        leak = " (leak)" if t["task"] in e.get("leakage", {}) else ""
        ax.plot(x[:len(c)], c, label=label + leak, color=colors[label],
                ls="-" if e["ruleset"] == "tuned" else "--", lw=1.3)
    if math.isfinite(t["target"]):
      ax.axhline(t["target"], color="k", ls=":", lw=1, label="target")
    if algoperf:
      ax.axvline(t["budget_external"], color="grey", ls="-.", lw=0.8, label="4/3 budget")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (median over studies)" if algoperf
                  else "running-min smoothed train loss")
    ax.set_title(f"{t['task']} (" + ("selected trial per study, median over studies"
                                      if algoperf else "median over seeds") + ")")
    paths[t["task"]] = _finish(plt, fig, ax, out_dir, f"curves_{t['task']}.png")
  r_max = lb["suite"]["r_max"]
  taus = np.linspace(1.0, r_max, 301)
  for label_key, title in (("steps", "steps to target"), ("time", "wall-clock time to target")):
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=90)
    for e, label in zip(lb["entrants"], names):
      ratios = [r for r in e.get(f"ratios_{label_key}_all", {}).values() if r is not None]
      b = e.get(f"score_{label_key}_all", float("nan"))
      ax.step(taus, scoring.performance_profile(ratios, taus), where="post",
              label=f"{label} (B={_fmt(b, 2)})", color=colors[label],
              ls="-" if e["ruleset"] == "tuned" else "--")
    ax.set_xlabel("tau (ratio to the best time)")
    ax.set_ylabel("fraction of tasks with r <= tau")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Performance profile, {title} (all optimizers)")
    paths[f"profile_{label_key}"] = _finish(plt, fig, ax, out_dir, f"profile_{label_key}.png")
  return paths


_JS = """
function sortTable(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
  var asc = th.getAttribute('data-dir') !== 'asc';
  Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute('data-dir'); });
  th.setAttribute('data-dir', asc ? 'asc' : 'desc');
  var rows = Array.prototype.slice.call(body.rows);
  function key(r) {
    var c = r.cells[idx], v = c.getAttribute('data-value');
    if (v === null) { v = c.textContent.trim(); }
    var x = parseFloat(v);
    if (v === 'inf') { x = Infinity; }
    return isNaN(x) ? v.toLowerCase() : x;
  }
  rows.sort(function (a, b) {
    var x = key(a), y = key(b);
    if (typeof x !== typeof y) { x = String(x); y = String(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  rows.forEach(function (r) { body.appendChild(r); });
  table.setAttribute('data-sorted-by', th.textContent.trim());
}
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    imgs[i].setAttribute('data-natural-width', imgs[i].naturalWidth);
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
  var th = document.querySelector('#leaderboard th[data-default-sort]');
  if (th) { sortTable(th); sortTable(th); }
  var rows = document.querySelectorAll('#leaderboard tbody tr').length;
  document.body.setAttribute('data-rows', rows);
});
"""


def _html(lb: Dict[str, Any], plots: Dict[str, str], command: Optional[str], machine: str) -> str:
  esc = html.escape
  rows = summary_rows(lb)
  cols = columns(lb)
  head = "".join(
      f"<th onclick=\"sortTable(this)\"{' data-default-sort' if k == 'score_steps' else ''}>"
      f"{esc(h)}</th>" for k, h in cols)
  body = []
  for r in rows:
    cells = []
    for k, _ in cols:
      v = r[k]
      num = ("" if not isinstance(v, (int, float)) or v is None or
             (isinstance(v, float) and math.isnan(v)) else f' data-value="{v}"')
      cls = ' class="leak"' if k == "leak" and str(v).startswith("OVERLAP") else ""
      cells.append(f"<td{num}{cls}>{esc(_fmt(v) if k != 'optimizer' else str(v))}</td>")
    body.append(f"<tr data-optimizer=\"{esc(r['optimizer'])}\">" + "".join(cells) + "</tr>")
  task_head = "<th onclick=\"sortTable(this)\">optimizer</th>" + "".join(
      f"<th onclick=\"sortTable(this)\">{esc(t['task'])}</th>" for t in lb["tasks"])

  def task_rows(key):
    rows = []
    for e in lb["entrants"]:
      cells = [f"<td>{esc(e['name'])}{'' if e['ruleset'] == 'tuned' else ' [self]'}</td>"]
      for t in lb["tasks"]:
        v = e["per_task"][t["task"]][key]
        if t["task"] in e.get("leakage", {}):
          cells.append(f"<td data-value=\"{v}\" class=\"leak\" title=\"leakage: "
                       f"{esc(', '.join(e['leakage'][t['task']]))}\">{esc(_fmt(v))} "
                       "(leak)</td>")
        else:
          cells.append(f"<td data-value=\"{v}\">{esc(_fmt(v))}</td>")
      rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(rows)

  imgs = "".join(f"<figure><img src=\"{esc(p)}\" alt=\"{esc(k)}\"><figcaption>{esc(k)}"
                 "</figcaption></figure>" for k, p in plots.items())
  s = lb["suite"]
  cmd = f"<p>Command: <code>{esc(command)}</code></p>" if command else ""
  if lb.get("protocol") == "algoperf":
    intro = (f"AlgoPerf protocol: targets on the validation loss from target-setting runs "
             f"(seeds {esc(str(s['target_seeds']))}); external tuning gets "
             f"{esc(s['budget_external'])} of the target-setting steps, {s['trials']} "
             f"quasi-random trials per study, fastest trial per study, median over "
             f"{len(s['seeds'])} studies; self-tuning gets {esc(s['budget_self_tuning'])}x. "
             f"Speedup = t_{esc(s['reference'])} / t per study (0 when missed), IQM with a "
             "95% stratified-bootstrap CI. Leaked (entrant, task) pairs are marked and left "
             "out of that entrant's scores.")
    target_rows = "".join(
        f"<tr><td>{esc(t['task'])}</td><td>{esc(str(t['dataset']))}</td>"
        f"<td>{esc(str(t['architecture']))}</td><td>{_fmt(t['target'], 4)}</td>"
        f"<td>{_fmt(t['target_error'], 3)}</td><td>{esc(str(t['setter']))}</td>"
        f"<td>{t['steps']}</td><td>{t['budget_external']}</td><td>{t['budget_self_tuning']}</td>"
        "</tr>" for t in lb["tasks"])
    targets = ("<h2>Targets and budgets</h2><table id=\"targets\"><thead><tr><th>task</th>"
               "<th>dataset</th><th>architecture</th><th>target valid loss</th>"
               "<th>target error rate</th><th>set by</th><th>target-setting steps</th>"
               "<th>budget (external)</th><th>budget (self-tuning)</th></tr></thead><tbody>"
               f"{target_rows}</tbody></table>")
  else:
    intro = (f"Target = upper median over seeds of tuned {esc(s['reference'])}'s running-min "
             f"smoothed train loss (window {s['smoothing_window']}) at the budget.")
    targets = ""
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>metaopt leaderboard {esc(s['id'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
th {{ background: #eee; cursor: pointer; }}
td:first-child, th:first-child {{ text-align: left; }}
td.leak {{ color: #b00; font-weight: bold; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head>
<body>
<h1>metaopt leaderboard: suite {esc(s['id'])}</h1>
<p>Suite hash <code>{esc(s['hash'])}</code>; {len(lb['tasks'])} tasks; evaluation seeds
{esc(str(s['seeds']))}. {intro}
B = AlgoPerf benchmark score (r_max = {s['r_max']}) within the ruleset; "B all" compares
every optimizer. Click a column header to sort.</p>
{cmd}<p>Machine: {esc(machine)}</p>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>
{''.join(body)}
</tbody></table>
{targets}
<h2>Median steps to target per task</h2>
<table id="per-task"><thead><tr>{task_head}</tr></thead><tbody>
{task_rows("steps_to_target")}
</tbody></table>
<h2>Time to target per task (seconds, the optimizer's own step time included)</h2>
<table id="per-task-time"><thead><tr>{task_head}</tr></thead><tbody>
{task_rows("seconds_to_target")}
</tbody></table>
<h2>Plots</h2>
{imgs}
<script>{_JS}</script>
</body></html>
"""


def _json_safe(x):
  if isinstance(x, float):
    return None if math.isnan(x) else ("inf" if math.isinf(x) else x)
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  return x


def write_report(db_path: str, suite, out_dir: str, command: Optional[str] = None) -> str:
  """Writes the report of ``suite`` (name, path or Suite) from ``db_path`` to ``out_dir``.

  Files: ``README.md`` (tables + plots), ``leaderboard.csv`` (one row per optimizer),
  ``per_task.csv`` (one row per optimizer and task), ``leaderboard.json`` (everything),
  ``curves_<task>.png``, ``profile_steps.png``, ``profile_time.png``, ``index.html``.
  Returns the path of ``index.html``.
  """
  suite = S.load(suite) if isinstance(suite, str) else suite
  if not os.path.exists(db_path):
    raise FileNotFoundError(f"No results database at {db_path!r}; run "
                            f"`metaopt leaderboard run --suite {suite.name} --db {db_path}` first.")
  with ResultsDB(db_path, readonly=True) as db:
    lb = compute(db, suite)
    tunings = db.tunings(suite.hash)
  if not lb["entrants"]:
    raise ValueError(f"{db_path} has no evaluation runs for suite {suite.id} (hash "
                     f"{suite.hash}); run `metaopt leaderboard run --suite {suite.name}` first.")
  os.makedirs(out_dir, exist_ok=True)
  machine = machine_description()
  plots = _plots(lb, out_dir)
  rows = summary_rows(lb)
  with open(os.path.join(out_dir, "leaderboard.csv"), "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=[k for k, _ in columns(lb)])
    wr.writeheader()
    wr.writerows(rows)
  pt = per_task_rows(lb)
  with open(os.path.join(out_dir, "per_task.csv"), "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(pt[0]))
    wr.writeheader()
    wr.writerows(pt)
  with open(os.path.join(out_dir, "leaderboard.json"), "w") as f:
    json.dump(_json_safe(dict(lb, tuning=tunings, machine=machine, command=command)), f,
              indent=1)
  md = [f"# metaopt leaderboard: suite `{suite.id}`", "",
        f"Suite hash `{suite.hash}`, {len(lb['tasks'])} tasks, evaluation seeds "
        f"{lb['suite']['seeds']}, tuning seed {suite.tuning_seed}.", ""]
  if command:
    md += [f"Generated by: `{command}`", ""]
  md += [f"Machine: {machine}", ""]
  cols = columns(lb)
  leak_mark = lambda e, t: " (leak)" if t in e.get("leakage", {}) else ""  # noqa: E731
  algoperf = lb.get("protocol") == "algoperf"
  if algoperf:
    s = lb["suite"]
    md += ["Scoring (AlgoPerf protocol; `docs/leaderboard/ABOUT.md`, `metaopt/eval/scoring.py`): "
           "target = validation loss from target-setting runs (best of the tuned "
           f"target-setting baselines, median over seeds {s['target_seeds']}); external "
           f"tuning: {s['trials']} quasi-random trials per study at {s['budget_external']} of "
           f"the target-setting steps, fastest trial per study, median over {len(s['seeds'])} "
           f"studies; self-tuning (`[self]`): one run per study at {s['budget_self_tuning']}x. "
           f"B = AlgoPerf score (r_max = {suite.r_max}) within the ruleset, `B all` across all; "
           f"speedup = t_{s['reference']} / t per study (0 when missed), IQM with a 95% "
           "stratified-bootstrap CI; wall time = steps to target x median time per compiled "
           "step (evaluation excluded). Pairs marked `(leak)` are left out of that entrant's "
           "scores.", ""]
  else:
    md += ["Scoring (see `metaopt/eval/scoring.py`): target = upper median over seeds of "
           f"tuned {suite.reference}'s running-min smoothed train loss (trailing mean over "
           f"{suite.smoothing_window} steps) at the budget; steps to target per task = median "
           "over seeds (inf if not reached); B = AlgoPerf benchmark score "
           f"(r_max = {suite.r_max}) within the ruleset, `B all` across all optimizers; "
           "speedup = geometric mean over reached tasks of t_Adam / t; `[self]` = "
           "self-tuning ruleset (one config for all tasks).", ""]
  md.append(_markdown_table([h for _, h in cols],
                            [[_fmt(r[k]) if k != "optimizer" else r[k] for k, _ in cols]
                             for r in rows]))
  if algoperf:
    md += ["", "## Targets and budgets", ""]
    md.append(_markdown_table(
        ["task", "dataset", "architecture", "target valid loss", "target error rate",
         "set by", "target-setting steps", "budget external", "budget self-tuning"],
        [[t["task"], str(t["dataset"]), str(t["architecture"]), _fmt(t["target"], 4),
          _fmt(t["target_error"], 3), str(t["setter"]), str(t["steps"]),
          str(t["budget_external"]), str(t["budget_self_tuning"])] for t in lb["tasks"]]))

  def per_task_table(title, key, digits=3, task_list=lb["tasks"], label=lambda t: t["task"],
                     mark_leaks=True):
    """A ``## title`` table: one row per entrant, one ``key`` cell per task."""
    rows = [[e["name"] + ("" if e["ruleset"] == "tuned" else " [self]")] +
            [_fmt(e["per_task"][t["task"]][key], digits) +
             (leak_mark(e, t["task"]) if mark_leaks else "") for t in task_list]
            for e in lb["entrants"]]
    return ["", f"## {title}", "", _markdown_table(["optimizer"] + [label(t) for t in task_list],
                                                   rows)]

  md += per_task_table("Median steps to target", "steps_to_target",
                       label=lambda t: f"{t['task']} ({t['steps']})")
  md += per_task_table("Time to target (seconds: steps to target x the optimizer's own time "
                       "per compiled step, its overhead included)", "seconds_to_target")
  md += per_task_table("Median final validation loss", "final_valid", digits=4)
  if lb.get("protocol") == "algoperf":
    md += per_task_table("Median best validation error rate (classifiers)", "best_error",
                         task_list=[t for t in lb["tasks"] if t.get("target_error") is not None],
                         label=lambda t: f"{t['task']} (target {_fmt(t['target_error'], 3)})")
    md += per_task_table("Seconds per compiled step (median of timed calls, evaluation "
                         "excluded)", "seconds_per_step", mark_leaks=False)
  if tunings:
    md += ["", "## Tuned configurations (best of the sweep on the tuning seed)", ""]
    md.append(_markdown_table(
        ["optimizer", "task", "best config", "final valid", "trials"],
        [[t["optimizer"], t["task"], f"`{json.dumps(t['best_config'], sort_keys=True)}`",
          _fmt(t["best_score"], 4), str(len(t["trials"]))]
         for t in sorted(tunings, key=lambda x: (x["optimizer"], x["task"]))]))
  md += ["", "## Plots", ""] + [f"![{k}]({p})" for k, p in plots.items()]
  md += [""] + lb["notes"]
  with open(os.path.join(out_dir, "README.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  path = os.path.join(out_dir, "index.html")
  with open(path, "w") as f:
    f.write(_html(lb, plots, command, machine))
  return path
