"""Leaderboard tables and reports from the results database.

``compute(db, suite)`` (``algoperf_scores.compute``) scores the stored runs of one
suite version (definitions in ``metaopt.eval.scoring``); ``format_table`` prints
it; ``write_report`` writes Markdown, CSV, JSON, PNG plots (validation curves per
task and performance profiles of the top entrants and the reference, in distinct
colours) and a static HTML page with sortable tables (inline JS, no external
resources). Names are escaped for every format: HTML, Markdown cells (``|``) and
CSV cells (a leading ``=``, ``+``, ``-`` or ``@`` cannot become a spreadsheet
formula).
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

from metaopt.eval import scoring
from metaopt.eval import suites as S
from metaopt.eval.algoperf_scores import compute
from metaopt.eval.store import ResultsDB

INF = float("inf")
#: Entrants drawn per ruleset in the plots (by B over time), beside the reference.
PLOT_TOP = 4


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


COLUMNS = [
    ("optimizer", "optimizer"), ("ruleset", "ruleset"), ("kind", "kind"),
    ("score_time", "B (time)"), ("score_steps", "B (steps)"),
    ("score_time_all", "B all (time)"), ("score_steps_all", "B all (steps)"),
    ("speedup_iqm", "speedup IQM"), ("speedup_ci", "95% CI (tasks+runs)"),
    ("frac_faster", "faster than ref"), ("reached", "reached"),
    ("meta_cost_hours", "meta-train h"), ("leak", "eligibility")]


def columns(lb: Dict[str, Any]) -> List[tuple]:
  """The summary columns (``(key, header)``)."""
  del lb
  return COLUMNS


def summary_rows(lb: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One flat dict per entrant with the ``columns(lb)`` keys."""
  n = len(lb["tasks"])
  rows = []
  for e in lb["entrants"]:
    row = {k: e.get(k) for k, _ in COLUMNS}
    row["optimizer"] = e["name"]
    row["reached"] = f"{e['reached']}/{n}"
    if e.get("speedup_ci"):
      row["speedup_ci"] = f"[{_fmt(e['speedup_ci'][0])}, {_fmt(e['speedup_ci'][1])}]"
    row["leak"] = ("INELIGIBLE: " + "; ".join(f"{t} ({', '.join(f)})"
                                              for t, f in e["ineligible"].items())
                   if e["ineligible"] else ("eligible" if e["kind"] == "learned" else ""))
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


def _md(cell: Any) -> str:
  """A Markdown table cell: ``|`` escaped, line breaks flattened."""
  return str(cell).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _csv_safe(value: Any) -> Any:
  """A CSV cell that a spreadsheet never evaluates: text starting with ``= + - @``
  (or a tab / carriage return) gets a leading ``'`` (OWASP's CSV-injection rule).
  Numbers pass through."""
  if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
    return "'" + value
  return value


def _markdown_table(header: List[str], rows: List[List[str]]) -> str:
  out = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
  return "\n".join(out)


def per_task_rows(lb: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One flat dict per (entrant, task) with every per-task metric."""
  out = []
  for e in lb["entrants"]:
    for t in lb["tasks"]:
      m = e["per_task"][t["task"]]
      out.append({"optimizer": e["name"], "ruleset": e["ruleset"], "task": t["task"],
                  "target": t["target"], **m,
                  "ineligible": "; ".join(e["ineligible"].get(t["task"], [])),
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


def plotted(lb: Dict[str, Any]) -> List[Dict[str, Any]]:
  """The entrants drawn in the plots: the reference and the ``PLOT_TOP`` best
  eligible entrants of each ruleset by B over time (a readable plot, not 25 lines)."""
  ref = lb["suite"]["reference"]
  out = [e for e in lb["entrants"] if e["name"] == ref and e["ruleset"] == "tuned"]
  for ruleset in ("tuned", "self_tuning"):
    group = [e for e in lb["entrants"] if e["ruleset"] == ruleset and not e["ineligible"]
             and e not in out]
    group.sort(key=lambda e: -_nan_to(e.get("score_time"), -1.0))
    out += group[:PLOT_TOP]
  return out


def _label(e: Dict[str, Any]) -> str:
  return e["name"] + ("" if e["ruleset"] == "tuned" else " [self]")


def _plots(lb: Dict[str, Any], out_dir: str) -> Dict[str, str]:
  """PNG per task (validation loss of the selected trial, median over studies) and
  performance profiles, for ``plotted(lb)`` (each entrant one distinct colour)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  shown = plotted(lb)
  cmap = plt.get_cmap("tab10")
  colors = {_label(e): cmap(i % 10) for i, e in enumerate(shown)}
  paths = {}
  for t in lb["tasks"]:
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=90)
    for e in shown:
      c = lb["curves"][t["task"]].get(e["name"])
      if not c:
        continue
      x, y = np.asarray(c["x"], np.float64), np.asarray(c["y"], np.float64)
      if y.size and np.any(np.isfinite(y) & (y > 0)):
        ax.plot(x[:len(y)], y, label=_label(e), color=colors[_label(e)],
                ls="-" if e["ruleset"] == "tuned" else "--", lw=1.4)
    if math.isfinite(t["target"]):
      ax.axhline(t["target"], color="k", ls=":", lw=1, label="target")
    ax.axvline(t["budget_external"], color="grey", ls="-.", lw=0.8, label="external budget")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (median over studies)")
    ax.set_title(f"{t['task']} (selected trial per study)")
    paths[t["task"]] = _finish(plt, fig, ax, out_dir, f"curves_{t['task']}.png")
  r_max = lb["suite"]["r_max"]
  taus = np.linspace(1.0, r_max, 301)
  for key, title in (("time", "time to target"), ("steps", "steps to target")):
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=90)
    for e in shown:
      ratios = [r for r in e.get(f"ratios_{key}_all", {}).values() if r is not None]
      # The legend shows the table's "B all" column: both come from these ratios.
      ax.step(taus, scoring.performance_profile(ratios, taus), where="post",
              label=f"{_label(e)} (B all={_fmt(e.get(f'score_{key}_all'), 3)})",
              color=colors[_label(e)], ls="-" if e["ruleset"] == "tuned" else "--")
    ax.set_xlabel("tau (ratio to the best time)")
    ax.set_ylabel("fraction of tasks with r <= tau")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Performance profile, {title} (eligible entrants, both rulesets)")
    paths[f"profile_{key}"] = _finish(plt, fig, ax, out_dir, f"profile_{key}.png")
  return paths


_JS = """
function sortTable(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
  var asc = th.getAttribute('data-dir') !== 'asc';
  Array.prototype.forEach.call(th.parentNode.children,
                               function (h) { h.removeAttribute('data-dir'); });
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


def _ineligible_note(e: Dict[str, Any], task: str) -> str:
  return "; ".join(e["ineligible"].get(task, []))


def improvement_rows(lb: Dict[str, Any]) -> List[List[str]]:
  """The probability-of-improvement matrix as rows ``[row entrant, P(row > col)...]``
  over ``plotted(lb)`` (eligible entrants with speedups), header first."""
  poi = lb.get("probability_of_improvement", {})
  keys = [f"{e['name']}|{e['ruleset']}" for e in plotted(lb)
          if f"{e['name']}|{e['ruleset']}" in poi]
  names = {f"{e['name']}|{e['ruleset']}": _label(e) for e in lb["entrants"]}
  rows = [["P(row > column)"] + [names[k] for k in keys]]
  for a in keys:
    rows.append([names[a]] + ["-" if a == b else _fmt(poi[a].get(b), 2) for b in keys])
  return rows


def _html(lb: Dict[str, Any], plots: Dict[str, str], command: Optional[str], machine: str) -> str:
  esc = html.escape
  rows = summary_rows(lb)
  head = "".join(
      f"<th onclick=\"sortTable(this)\"{' data-default-sort' if k == 'score_time' else ''}>"
      f"{esc(h)}</th>" for k, h in COLUMNS)
  body = []
  for r in rows:
    cells = []
    for k, _ in COLUMNS:
      v = r[k]
      num = ("" if not isinstance(v, (int, float)) or v is None or
             (isinstance(v, float) and math.isnan(v)) else f' data-value="{v}"')
      cls = ' class="leak"' if k == "leak" and str(v).startswith("INELIGIBLE") else ""
      cells.append(f"<td{num}{cls}>{esc(_fmt(v) if k != 'optimizer' else str(v))}</td>")
    body.append(f"<tr data-optimizer=\"{esc(r['optimizer'])}\">" + "".join(cells) + "</tr>")
  task_head = "<th onclick=\"sortTable(this)\">optimizer</th>" + "".join(
      f"<th onclick=\"sortTable(this)\">{esc(t['task'])}</th>" for t in lb["tasks"])

  def task_rows(key):
    out = []
    for e in lb["entrants"]:
      cells = [f"<td>{esc(_label(e))}</td>"]
      for t in lb["tasks"]:
        v = e["per_task"][t["task"]][key]
        note = _ineligible_note(e, t["task"])
        if note:
          cells.append(f"<td data-value=\"{v}\" class=\"leak\" title=\"ineligible: "
                       f"{esc(note)}\">{esc(_fmt(v))} (overlap)</td>")
        else:
          cells.append(f"<td data-value=\"{v}\">{esc(_fmt(v))}</td>")
      out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out)

  poi = improvement_rows(lb)
  poi_html = ""
  if len(poi) > 1:
    poi_html = ("<h2>Probability of improvement (normalized speedups, tasks averaged)</h2>"
                "<table id=\"improvement\"><thead><tr>"
                + "".join(f"<th>{esc(h)}</th>" for h in poi[0]) + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                          for r in poi[1:]) + "</tbody></table>")
  imgs = "".join(f"<figure><img src=\"{esc(p)}\" alt=\"{esc(k)}\"><figcaption>{esc(k)}"
                 "</figcaption></figure>" for k, p in plots.items())
  s = lb["suite"]
  cmd = f"<p>Command: <code>{esc(command)}</code></p>" if command else ""
  intro = (f"AlgoPerf protocol: targets on the validation loss (fixed evaluation sets) from "
           f"target-setting runs (seeds {esc(str(s['target_seeds']))}); external tuning gets "
           f"{esc(s['budget_external'])} of the target-setting steps, {s['trials']} "
           f"quasi-random trials per study, fastest trial per study, median over "
           f"{len(s['seeds'])} studies; self-tuning gets {esc(s['budget_self_tuning'])}x. "
           "Every entrant is scored on every task; B divides by the full task count; B over "
           "time to target (each optimizer's own step time) is the headline, steps beside it. "
           f"Speedup = t_{esc(s['reference'])} / t per study (0 when missed), IQM with a 95% "
           "bootstrap CI resampling tasks and studies. A learned optimizer meta-trained on a "
           "task's dataset or family is ineligible for the suite, shown apart with the reason.")
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
every eligible optimizer (the plots' legends show it). Click a column header to sort.</p>
{cmd}<p>Machine: {esc(machine)}</p>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>
{''.join(body)}
</tbody></table>
{targets}
<h2>Time to target per task (seconds: steps x the optimizer's own time per compiled step)</h2>
<table id="per-task-time"><thead><tr>{task_head}</tr></thead><tbody>
{task_rows("seconds_to_target")}
</tbody></table>
<h2>Median steps to target per task</h2>
<table id="per-task"><thead><tr>{task_head}</tr></thead><tbody>
{task_rows("steps_to_target")}
</tbody></table>
{poi_html}
<h2>Plots (the reference and the top {PLOT_TOP} eligible entrants of each ruleset)</h2>
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
  ``curves_<task>.png``, ``profile_time.png``, ``profile_steps.png``, ``index.html``.
  Returns the path of ``index.html``. An ``out_dir`` that cannot be written (a file,
  a read-only folder, a full disk) is a ``ReportError`` naming it.
  """
  suite = S.load(suite) if isinstance(suite, str) else suite
  if not os.path.exists(db_path):
    raise FileNotFoundError(f"No results database at {db_path!r}; run "
                            f"`metaopt leaderboard run --suite {suite.name} --db {db_path}` first.")
  with ResultsDB(db_path, readonly=True) as db:
    lb = compute(db, suite)
  if not lb["entrants"]:
    raise ValueError(f"{db_path} has no runs for suite {suite.id} (hash {suite.hash}); run "
                     f"`metaopt leaderboard run --suite {suite.name}` first.")
  try:
    return _write(lb, suite, out_dir, command)
  except OSError as e:
    raise ReportError(f"cannot write the report to {out_dir!r}: {e.strerror or e}. Choose "
                      "a writable folder with --out (and free disk space).") from e


class ReportError(ValueError):
  """The report's output folder cannot be written."""


def log_to_wandb(lb: Dict[str, Any], out_dir: str, mode: str,
                 project: str = "metaopt") -> None:
  """Logs a written report to a wandb run (``mode``: offline | online | disabled; the
  run lives in ``out_dir/wandb``): the summary table, the per-task table, every
  entrant's scores as metrics and the plots as images. ``metrics.jsonl`` in
  ``out_dir`` keeps the same scores."""
  from metaopt.runlog import MetricsLogger  # pylint: disable=import-outside-toplevel
  s = lb["suite"]
  with MetricsLogger(out_dir, {"suite": s["id"], "hash": s["hash"]}, project=project,
                     mode=mode, name=f"leaderboard-{s['id']}") as logger:
    scores = {}
    for e in lb["entrants"]:
      for key in ("score_time", "score_steps", "score_time_all", "speedup_iqm"):
        if e.get(key) is not None:
          scores[f"{key}/{_label(e)}"] = e[key]
    logger.log(0, scores)
    rows = summary_rows(lb)
    logger.log_table("leaderboard", [h for _, h in COLUMNS],
                     [[_fmt(r[k]) if k != "optimizer" else r[k] for k, _ in COLUMNS]
                      for r in rows])
    pt = per_task_rows(lb)
    logger.log_table("per_task", list(pt[0]), [list(r.values()) for r in pt])
    logger.log_images(0, {os.path.splitext(f)[0]: os.path.join(out_dir, f)
                          for f in sorted(os.listdir(out_dir)) if f.endswith(".png")})


def _write(lb: Dict[str, Any], suite: S.Suite, out_dir: str, command: Optional[str]) -> str:
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ReportError(f"--out {out_dir!r} is a file, not a folder; choose a folder.")
  os.makedirs(out_dir, exist_ok=True)
  machine = machine_description()
  plots = _plots(lb, out_dir)
  rows = summary_rows(lb)
  with open(os.path.join(out_dir, "leaderboard.csv"), "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=[k for k, _ in COLUMNS])
    wr.writeheader()
    wr.writerows([{k: _csv_safe(v) for k, v in r.items()} for r in rows])
  pt = per_task_rows(lb)
  with open(os.path.join(out_dir, "per_task.csv"), "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(pt[0]))
    wr.writeheader()
    wr.writerows([{k: _csv_safe(v) for k, v in r.items()} for r in pt])
  with open(os.path.join(out_dir, "leaderboard.json"), "w") as f:
    json.dump(_json_safe(dict(lb, machine=machine, command=command)), f, indent=1)
  s = lb["suite"]
  md = [f"# metaopt leaderboard: suite `{suite.id}`", "",
        f"Suite hash `{suite.hash}`, {len(lb['tasks'])} tasks, evaluation seeds "
        f"{s['seeds']}.", ""]
  if command:
    md += [f"Generated by: `{command}`", ""]
  md += [f"Machine: {machine}", ""]
  md += ["Scoring (AlgoPerf protocol; `docs/leaderboard/ABOUT.md`, `metaopt/eval/scoring.py`): "
         "target = validation loss on a fixed evaluation set from target-setting runs (tuned "
         f"{', '.join(suite.target_baselines)}, median over seeds {s['target_seeds']}); "
         f"external tuning: {s['trials']} quasi-random trials per study at "
         f"{s['budget_external']} of the target-setting steps, fastest trial per study, "
         f"median over {len(s['seeds'])} studies; self-tuning (`[self]`): one run per study "
         f"at {s['budget_self_tuning']}x. Every entrant is scored on every task; B "
         f"(r_max = {suite.r_max}) divides by the full task count, within the ruleset "
         "(`B all`: across both); B over time to target (steps x the optimizer's own time "
         "per compiled step, evaluation excluded) is the headline. Speedup = "
         f"t_{s['reference']} / t per study (0 when missed), IQM with a 95% bootstrap CI "
         "resampling tasks and studies. A learned optimizer meta-trained on a task's "
         "dataset or family is ineligible (listed last, with the reason).", ""]
  md.append(_markdown_table([h for _, h in COLUMNS],
                            [[_fmt(r[k]) if k != "optimizer" else r[k] for k, _ in COLUMNS]
                             for r in rows]))
  md += ["", "## Targets and budgets", ""]
  md.append(_markdown_table(
      ["task", "dataset", "architecture", "target valid loss", "target error rate",
       "set by", "target-setting steps", "budget external", "budget self-tuning"],
      [[t["task"], str(t["dataset"]), str(t["architecture"]), _fmt(t["target"], 4),
        _fmt(t["target_error"], 3), str(t["setter"]), str(t["steps"]),
        str(t["budget_external"]), str(t["budget_self_tuning"])] for t in lb["tasks"]]))

  def per_task_table(title, key, digits=3, task_list=lb["tasks"], label=lambda t: t["task"],
                     source=None):
    """A ``## title`` table: one row per entrant, one ``key`` cell per task."""
    value = source or (lambda e, t: e["per_task"][t["task"]][key])
    rows = [[_label(e)] + [_fmt(value(e, t), digits)
                           + (" (overlap)" if _ineligible_note(e, t["task"]) else "")
                           for t in task_list]
            for e in lb["entrants"]]
    return ["", f"## {title}", "", _markdown_table(["optimizer"] + [label(t) for t in task_list],
                                                   rows)]

  md += per_task_table("Time to target (seconds: steps to target x the optimizer's own time "
                       "per compiled step, its overhead included)", "seconds_to_target")
  md += per_task_table("Median steps to target", "steps_to_target",
                       label=lambda t: f"{t['task']} ({t['steps']})")
  md += per_task_table("Performance ratio over time within the ruleset (r = t / best t; "
                       "inf = missed)", None,
                       source=lambda e, t: e.get("ratios_time", {}).get(t["task"]))
  md += per_task_table("Median final validation loss", "final_valid", digits=4)
  md += per_task_table("Median best validation error rate (classifiers)", "best_error",
                       task_list=[t for t in lb["tasks"] if t.get("target_error") is not None],
                       label=lambda t: f"{t['task']} (target {_fmt(t['target_error'], 3)})")
  md += per_task_table("Seconds per compiled step (median of timed calls, evaluation "
                       "excluded)", "seconds_per_step")
  md += per_task_table("Compile time of the training step (seconds; one-time, not in the "
                       "score)", "compile_seconds", digits=2)
  poi = improvement_rows(lb)
  if len(poi) > 1:
    md += ["", "## Probability of improvement (normalized speedups, tasks averaged)", "",
           _markdown_table(poi[0], poi[1:])]
  md += ["", "## Plots (the reference and the top entrants of each ruleset)", ""]
  md += [f"![{k}]({p})" for k, p in plots.items()]
  md += [""] + lb["notes"]
  with open(os.path.join(out_dir, "README.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  path = os.path.join(out_dir, "index.html")
  with open(path, "w") as f:
    f.write(_html(lb, plots, command, machine))
  return path
