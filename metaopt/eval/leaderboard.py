"""``run_leaderboard``: evaluate optimizers on a suite, storing every run.

For each task of the suite and each entrant:

* tuned ruleset: every config of the entrant's ``tuning_grid`` is trained on the
  suite's ``tuning_seed`` (never an evaluation seed) and scored by its final
  ``inner_valid`` loss (NaN/diverged = +inf; ties keep the earlier, i.e. smaller
  learning rate). The trials and the best config go to the database; the best
  config is then trained on every evaluation seed.
* self-tuning ruleset: the entrant's single fixed config on every evaluation seed.

Each run is stored as soon as it ends; what is already stored is skipped, so an
interrupted leaderboard resumes where it stopped (errors are stored too and only
retried with ``retry_errors=True``). One runner at a time per database
(``store.runner_lock``): a second one is refused instead of training the same
missing runs again. The reference optimizer of the suite (tuned
Adam), which sets every task's target, is always included.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from metaopt.eval import entrants as E
from metaopt.eval import protocol
from metaopt.eval import suites as S
from metaopt.eval.runner import Runner
from metaopt.eval.store import ResultsDB, config_key, runner_lock

OBJECTIVE = "final_valid"


def shipped_learned() -> List[str]:
  """Names of the learned optimizers shipped in ``metaopt/pretrained``."""
  try:
    from metaopt.lopt import io  # pylint: disable=import-outside-toplevel
  except ImportError:
    return []
  return list(io.pretrained_names())


#: Baselines entered at their published defaults too (the self-tuning field).
AT_DEFAULTS = ("schedule_free_adamw",)


def default_optimizers() -> List[str]:
  """Every registry baseline (schedule-free AdamW also at its published defaults, a
  self-tuning entrant) and every shipped learned optimizer."""
  return (E.all_baselines() + [f"{n}@defaults" for n in AT_DEFAULTS]
          + [f"lopt:{n}" for n in shipped_learned()])


def resolve_seeds(suite: S.Suite, seeds: Union[None, int, Sequence[int]]) -> List[int]:
  """``None``: the suite's seeds; an int ``N``: its first ``N`` seeds (extended with
  the next integers when ``N`` is larger); a list: those seeds."""
  if seeds is None:
    return list(suite.seeds)
  if isinstance(seeds, int):
    if seeds < 1:
      raise ValueError(f"--seeds must be >= 1, got {seeds}.")
    out = list(suite.seeds[:seeds])
    nxt = max(suite.seeds) + 1
    while len(out) < seeds:
      if nxt != suite.tuning_seed:
        out.append(nxt)
      nxt += 1
    return out
  out = [int(s) for s in seeds]
  if suite.tuning_seed in out:
    raise ValueError(f"seed {suite.tuning_seed} is the suite's tuning seed; evaluation "
                     "seeds must differ from it.")
  return out


def _trial_score(run: Dict[str, Any]) -> float:
  if run["status"] != "ok" or run["valid_loss"] is None or not len(run["valid_loss"]):
    return math.inf
  v = float(run["valid_loss"][-1])
  return v if math.isfinite(v) else math.inf


def speedup_reference(suite: S.Suite) -> str:
  """The first registered baseline of the suite's ``speedup_reference`` list (tuned
  NAdamW, else Adam until NAdamW is registered)."""
  from metaopt import optimizers as baselines  # pylint: disable=import-outside-toplevel
  for name in suite.speedup_reference:
    if name in baselines.names():
      return name
  raise ValueError(f"none of the speedup references {list(suite.speedup_reference)} is a "
                   "registered baseline.")


def run_leaderboard(suite: Union[str, S.Suite], optimizers: Optional[Sequence[Any]] = None,
                    seeds: Union[None, int, Sequence[int]] = None,
                    db_path: str = "leaderboard.db", progress: bool = True,
                    retry_errors: bool = False, compile_workers: int = 2,
                    log: Callable[[str], None] = print,
                    only_tasks: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Runs (or resumes) the leaderboard of ``suite``.

  Args:
    suite: suite name (``v1``, ``smoke``), path, or a loaded ``Suite``.
    optimizers: entrant specs (``"adam"``, ``"adam@defaults"``, ``"lopt:NAME"``, a
      ``.safetensors`` path) or ``Entrant`` objects; default ``default_optimizers()``.
    seeds: evaluation seeds (see ``resolve_seeds``).
    db_path: SQLite results database (created if missing).
    progress: show a tqdm progress bar over all planned runs.
    retry_errors: re-run stored runs whose status is ``error``.
    compile_workers: threads compiling the programs of one task's optimizers in
      parallel before its runs (XLA compilation dominates on small tasks).
    log: where one-line messages go.
    only_tasks: (AlgoPerf suites) run only these tasks of the suite.
  Returns:
    ``{"suite", "db", "planned", "trained", "skipped", "errors", "diverged",
    "compiled"}``; ``trained == 0`` when everything was already stored.
  """
  import tasks as task_registry  # pylint: disable=import-outside-toplevel
  suite = S.load(suite) if isinstance(suite, str) else suite
  seeds = resolve_seeds(suite, seeds)
  specs = list(optimizers) if optimizers is not None else default_optimizers()
  ents = [s if isinstance(s, E.Entrant) else E.parse(s) for s in specs]
  labels = [(e.name, e.ruleset) for e in ents]
  if len(set(labels)) != len(labels):
    raise ValueError(f"an optimizer is listed twice: {[e.name for e in ents]}.")
  if suite.algoperf:
    ref_name = speedup_reference(suite)
    if not any(e.name == ref_name and e.ruleset == "tuned" for e in ents):
      log(f"adding tuned {ref_name} (the reference of the normalized speedups)")
      ents.insert(0, E.baseline(ref_name))
    return protocol.run(suite, ents, db_path, progress=progress, retry_errors=retry_errors,
                        log=log, only_tasks=only_tasks)
  if not any(e.name == suite.reference and e.ruleset == "tuned" for e in ents):
    ref = E.baseline(suite.reference)
    if ref.ruleset != "tuned":
      raise ValueError(f"suite reference {suite.reference!r} must be a tuned baseline.")
    log(f"adding tuned {suite.reference} (the suite's reference: it sets each task's target)")
    ents.insert(0, ref)
  names = [t.task for t in suite.tasks]
  unknown = sorted(set(names) - set(task_registry.task_names()))
  if unknown:
    task_registry.get(unknown[0])  # Raises listing the known tasks.

  from metaopt import optimizers as baselines  # pylint: disable=import-outside-toplevel
  runner = Runner(compile_workers)
  stats = {"trained": 0, "skipped": 0, "errors": 0, "diverged": 0}

  with runner_lock(db_path), ResultsDB(db_path) as db:
    db.register_suite(suite)
    for e in ents:
      db.upsert_optimizer(e.name, e.ruleset, e.kind, e.source, e.trained_on,
                          e.meta_cost_hours, e.description)
    grids = {}
    for e in ents:
      if e.tuned:
        sp = baselines.spec(e.source)
        grids[e.name] = E.tuning_grid(dict(sp.search_space), dict(sp.defaults),
                                      suite.lr_points, suite.other_points, suite.max_trials)
    planned = sum(len(seeds) + (len(grids[e.name][0]) if e.tuned else 0)
                  for e in ents) * len(suite.tasks)
    stats["planned"] = planned
    bar = None
    if progress:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      bar = tqdm(total=planned, desc=f"leaderboard {suite.id}", unit="run")
    task_cache: Dict[str, Any] = {}

    def get_task(name):
      if name not in task_cache:
        task_cache.clear()  # Keep one task's data in memory at a time.
        task_cache[name] = task_registry.get(name)
      return task_cache[name]

    def do(e, st, purpose, seed, config):
      """Runs one (e, task, seed, config) unless stored; returns the stored row."""
      if bar is not None:
        bar.set_postfix_str(f"{e.name} {st.task} {purpose} seed={seed}")
      if stored(e, st, purpose, seed, config):
        stats["skipped"] += 1
      else:
        out = runner.execute(get_task(st.task), e, config, seed, st.steps, st.eval_every,
                             suite.eval_batches)
        protocol.store_outcome(db, suite, e, purpose, st.task, seed, config, st.steps, out,
                               stats, log)
      if bar is not None:
        bar.update(1)
      return db.runs(suite.hash, purpose, ruleset=e.ruleset, optimizer=e.name, task=st.task,
                     seed=seed, config=config_key(config))[0]

    def stored(e, st, purpose, seed, cfg):
      return db.has_run(suite.hash, e.ruleset, e.name, purpose, st.task, seed, cfg,
                        include_errors=not retry_errors)

    def needed(e, st):
      """A config of ``e`` still to be run on ``st`` (to precompile), or None."""
      if e.tuned:
        configs = grids[e.name][0]
        if not all(stored(e, st, "tune", suite.tuning_seed, c) for c in configs):
          return configs[0]
        tuning = db.get_tuning(suite.hash, e.ruleset, e.name, st.task)
        if tuning is None:
          return configs[0]
        cfg = tuning["best_config"]
      else:
        cfg = e.fixed_config(st.steps)
      return None if all(stored(e, st, "eval", s, cfg) for s in seeds) else cfg

    try:
      for st in suite.tasks:
        todo = [(e, cfg) for e in ents for cfg in [needed(e, st)] if cfg is not None]
        if bar is not None and todo:
          bar.set_postfix_str(f"compiling {len(todo)} programs for {st.task}")
        for e, cfg in todo:
          runner.prefetch(get_task(st.task), e, cfg, st.steps, st.eval_every,
                          suite.eval_batches)
        runner.wait()  # Timed runs must not share the CPU with compilations.
        for e in ents:
          if e.tuned:
            configs, note = grids[e.name]
            trials = []
            for cfg in configs:
              row = do(e, st, "tune", suite.tuning_seed, cfg)
              trials.append({"config": cfg, "score": _trial_score(row), "status": row["status"]})
            scores = [t["score"] for t in trials]
            best = int(np.argmin(scores))  # First minimum: the smaller lr on ties.
            best_cfg = trials[best]["config"]
            db.set_tuning(suite.hash, e.ruleset, e.name, st.task, best_cfg, scores[best],
                          f"{OBJECTIVE}; {note}", suite.tuning_seed, trials)
          else:
            best_cfg = e.fixed_config(st.steps)
          for seed in seeds:
            do(e, st, "eval", seed, best_cfg)
        runner.clear()  # Free the task's compiled programs.
    finally:
      runner.close()
      if bar is not None:
        bar.close()
  stats.update(suite=suite.id, db=db_path, compiled=runner.compiled)
  return stats
