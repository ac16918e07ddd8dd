"""``metaopt leaderboard run|show|report``: benchmark optimizers on a versioned suite."""

from __future__ import annotations

import functools
import os
import shlex
import sqlite3
import sys


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "leaderboard", help="evaluate optimizers on a versioned suite of held-out tasks",
      description="Run tuned baselines and learned optimizers on a suite, store every run "
                  "in a SQLite database (resumable), and print or write the leaderboard.")
  sub = p.add_subparsers(dest="leaderboard_command", metavar="ACTION")
  p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

  def common(q):
    q.add_argument("--suite", default="v3", help="suite name (v3, v2, demo) or JSON path")
    q.add_argument("--db", default="leaderboard.db", help="results database (SQLite file)")

  r = sub.add_parser("run", help="run (or resume) the suite")
  common(r)
  r.add_argument("--optimizers", nargs="+", default=None, metavar="OPT",
                 help="baseline names (tuned), NAME@defaults, learned optimizer names or "
                      ".safetensors paths; default: every baseline + shipped learned ones")
  r.add_argument("--retry-errors", action="store_true", help="re-run stored failed runs")
  r.add_argument("--wandb", default="disabled", choices=("disabled", "offline", "online"),
                 help="log the resulting tables and scores to a wandb run in <db>_wandb/ "
                      "(default disabled)")
  r.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                 help="run only these tasks of the suite (e.g. to split it over processes "
                      "with separate databases, then `merge`)")
  r.add_argument("--no-progress", action="store_true")
  r.set_defaults(func=_run)

  t = sub.add_parser("set-targets", help="(suite maintainers) run the target-setting runs of "
                     "a suite and freeze its targets in the suite file")
  common(t)
  t.add_argument("--out", default=None,
                 help="suite file to write (default: the shipped file of --suite)")
  t.set_defaults(func=_set_targets)

  m = sub.add_parser("merge", help="copy the results of other databases into --db (e.g. "
                     "from processes that each ran some tasks with --tasks)")
  m.add_argument("--db", default="leaderboard.db", help="results database to merge into")
  m.add_argument("sources", nargs="+", metavar="DB", help="databases to copy from")
  m.set_defaults(func=_merge)

  s = sub.add_parser("show", help="print the leaderboard table")
  common(s)
  s.set_defaults(func=_show)

  o = sub.add_parser("report", help="write Markdown, CSV, JSON, PNG plots and an HTML page")
  common(o)
  o.add_argument("--out", default=None, help="output folder (default leaderboard_<suite>/)")
  o.add_argument("--wandb", default="disabled", choices=("disabled", "offline", "online"),
                 help="also log the tables, scores and plots to a wandb run (in OUT/wandb; "
                      "default disabled)")
  o.set_defaults(func=_report)


def _fail(e: Exception) -> int:
  print(f"error: {e}", file=sys.stderr)
  return 2


def _db_error(db: str, e: sqlite3.Error) -> int:
  """An SQLite error met after the database was opened (e.g. corruption past the
  pages checked at open): one line naming the file and the fix."""
  return _fail(ValueError(f"results database {db}: {e}. If it is corrupt, move it away "
                          "and re-run `metaopt leaderboard run` to rebuild it."))


def _clean_errors(command):
  """Bad input (unknown names, bad files, a damaged database) becomes one line on
  stderr and exit status 2 instead of a traceback."""

  @functools.wraps(command)
  def wrapped(args) -> int:
    try:
      return command(args)
    except (KeyError, ValueError, FileNotFoundError) as e:
      return _fail(e)
    except sqlite3.Error as e:
      return _db_error(args.db, e)
    except KeyboardInterrupt:
      print("interrupted: every finished run is stored; re-run the same command to resume.",
            file=sys.stderr)
      return 130
    except BrokenPipeError:
      # The reader went away (`show | head`): stop quietly, as other CLI tools do.
      # Python flushes stdout at exit; point it at devnull so that flush cannot fail.
      try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      except (OSError, ValueError):  # stdout without a file descriptor (captured)
        pass
      return 0

  return wrapped


@_clean_errors
def _run(args) -> int:
  from metaopt.eval import format_table, protocol, suites  # pylint: disable=import-outside-toplevel
  from metaopt.eval.store import ResultsDB  # pylint: disable=import-outside-toplevel
  from metaopt.eval.report import compute, log_to_wandb  # pylint: disable=import-outside-toplevel
  suite = suites.load(args.suite)
  stats = protocol.run_leaderboard(suite, args.optimizers, args.db,
                                   progress=not args.no_progress,
                                   retry_errors=args.retry_errors, only_tasks=args.tasks)
  print(f"{stats['trained']} runs trained, {stats['skipped']} already stored, "
        f"{stats['errors']} errors, {stats['diverged']} diverged; results in {args.db}")
  with ResultsDB(args.db, readonly=True) as db:
    lb = compute(db, suite)
  print(format_table(lb))
  if args.wandb != "disabled":
    where = os.path.splitext(args.db)[0] + "_wandb"
    log_to_wandb(lb, where, args.wandb)
    print(f"logged the leaderboard to wandb ({args.wandb}; run in {where})")
  return 0


@_clean_errors
def _set_targets(args) -> int:
  from metaopt.eval import protocol, suites  # pylint: disable=import-outside-toplevel
  suite = suites.load(args.suite)
  out = args.out or (args.suite if os.path.exists(args.suite) else None)
  protocol.set_targets(suite, args.db, out)
  return 0


@_clean_errors
def _merge(args) -> int:
  from metaopt.eval.store import ResultsDB, runner_lock  # pylint: disable=import-outside-toplevel
  with runner_lock(args.db), ResultsDB(args.db) as db:
    for src in args.sources:
      if not os.path.exists(src):
        raise FileNotFoundError(f"No results database at {src!r}.")
      print(f"{src}: {db.merge(src)} runs added to {args.db}")
  return 0


@_clean_errors
def _show(args) -> int:
  from metaopt.eval import format_table, suites  # pylint: disable=import-outside-toplevel
  from metaopt.eval.store import ResultsDB  # pylint: disable=import-outside-toplevel
  from metaopt.eval.report import compute  # pylint: disable=import-outside-toplevel
  suite = suites.load(args.suite)
  if not os.path.exists(args.db):
    raise FileNotFoundError(f"No results database at {args.db!r}; run `metaopt leaderboard "
                            f"run --suite {args.suite} --db {args.db}` first.")
  with ResultsDB(args.db, readonly=True) as db:
    lb = compute(db, suite)
  if not lb["entrants"]:
    return _fail(ValueError(f"{args.db} has no runs for suite {suite.id}."))
  print(format_table(lb))
  return 0


@_clean_errors
def _report(args) -> int:
  from metaopt.eval import report, suites  # pylint: disable=import-outside-toplevel
  from metaopt.eval.store import ResultsDB  # pylint: disable=import-outside-toplevel
  out = args.out or f"leaderboard_{os.path.splitext(os.path.basename(args.suite))[0]}"
  suite = suites.load(args.suite)
  path = report.write_report(args.db, suite, out,
                             command="metaopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
                             if os.path.basename(sys.argv[0]) == "metaopt" else None)
  print(f"wrote {path} (and README.md, CSV, JSON, PNG plots in {out})")
  if args.wandb != "disabled":
    with ResultsDB(args.db, readonly=True) as db:
      report.log_to_wandb(report.compute(db, suite), out, args.wandb)
    print(f"logged the leaderboard to wandb ({args.wandb}; run in {out}/wandb)")
  return 0
