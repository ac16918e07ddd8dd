"""Benchmark suites, baseline tuning, results database, scoring and reports.

* ``run_leaderboard(suite, optimizers, seeds, db_path, progress)``: run/resume a suite.
* ``write_report(db_path, suite, out_dir) -> path of index.html``.
* ``suites.load(name)``, ``scoring`` (AlgoPerf metrics), ``store.ResultsDB``.
* ``protocol``: the AlgoPerf protocol of suite v2 (``set_targets``, ``run``);
  ``algoperf_scores.compute`` scores it.
"""

from metaopt.eval import scoring, suites
from metaopt.eval.leaderboard import default_optimizers, run_leaderboard
from metaopt.eval.report import compute, format_table, write_report
from metaopt.eval.store import ResultsDB
