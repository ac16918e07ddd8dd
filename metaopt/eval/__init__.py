"""The leaderboard: suites, the protocol, the results database, scoring, reports.

One path for every suite: ``protocol.run_leaderboard`` plans and executes the runs
(``runner``), ``store.ResultsDB`` keeps them, ``algoperf_scores.compute`` scores
them and ``report`` renders them (``format_table``, ``write_report``).

* ``run_leaderboard(suite, optimizers, db_path, progress)``: run/resume a suite.
* ``write_report(db_path, suite, out_dir) -> path of index.html``.
* ``suites.load(name)``, ``scoring`` (AlgoPerf metrics), ``store.ResultsDB``.
"""

from metaopt.eval import scoring, suites
from metaopt.eval.protocol import run_leaderboard
from metaopt.eval.report import compute, format_table, write_report
from metaopt.eval.store import ResultsDB
from metaopt.eval.entrants import default_entrants
