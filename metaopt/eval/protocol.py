"""The leaderboard protocol (AlgoPerf v0.6), the one path of every suite.

``run_leaderboard`` plans and executes a suite's runs (``plan`` -> ``runner``), the
database stores them, ``algoperf_scores.compute`` scores them and ``report`` renders
them; nothing in between returns to an earlier module.

* ``set_targets``: per task, each target-setting baseline (with the suite's
  learning-rate schedule) gets ``target_setting.trials`` quasi-random trials at the
  task's target-setting steps on the target tuning seed; its best config (lowest
  validation loss) is repeated on every target-setting seed; the target is the
  lowest median best-validation-loss over the baselines (``scoring.target_from_runs``).
  The targets are written into the suite file (frozen, covered by its hash).
* ``run``: external tuning (``tuned`` entrants): one study per suite seed, each of
  ``trials`` quasi-random configs of the baseline's search space (the suite's frozen
  space when it has one), all trials of a task vmapped in one program, at the
  suite's external budget (4/3 of the target-setting steps). Self-tuning entrants:
  one run per study seed at the self-tuning budget (v3: 1.5x the external one).
  Then the compiled training step of each (task, entrant) is timed
  (``runner.time_steps``, its compile time stored apart) for wall time to target.

Runs are stored as they finish (purpose ``trial``, ``target_tune``, ``target``);
stored runs are skipped, so both commands resume. Runs are keyed by the suite's
``setup_hash`` (its content without the frozen targets): no run depends on the
targets, so ``run`` may even go before or beside ``set-targets`` (then use another
``--db``: one runner per database).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import numpy as np

import metaopt
import tasks as task_registry
from metaopt import optimizers
from metaopt.eval import entrants as E
from metaopt.eval import scoring
from metaopt.eval import suites as S
from metaopt.eval.runner import execute_batch, time_steps
from metaopt.eval.store import ResultsDB, config_key, runner_lock
from metaopt.optimizers.tune import METHODS

#: Steps per timing call and number of timed calls (median taken).
TIMING_STEPS = 32
TIMING_REPEATS = 5
#: Hyper-parameter names meaning that a baseline schedules its learning rate itself.
_OWN_SCHEDULE_KEYS = ("schedule", "warmup_fraction", "warmup_steps", "decay", "decay_type",
                      "decay_schedule")


def search_method() -> str:
  """``quasirandom`` when ``metaopt.optimizers`` has it, else ``random``."""
  return "quasirandom" if "quasirandom" in METHODS else "random"


def trial_configs(name: str, num_trials: int, seed: int,
                  extra: Optional[Dict[str, Any]] = None,
                  space: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
  """``num_trials`` full configs of baseline ``name``: defaults updated by quasi-random
  points of its search space (``space`` when the suite freezes one; seeded by
  ``seed``) and ``extra``."""
  spec = optimizers.spec(name)
  points = optimizers.search_configs(name, method=search_method(), num_trials=num_trials,
                                     seed=seed, space=space)
  out = []
  for p in points:
    cfg = dict(spec.defaults)
    cfg.update(p)
    cfg.update(extra or {})
    out.append({k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in cfg.items()})
  return out


def scheduled(name: str, schedule: str) -> Dict[str, Any]:
  """The config entries giving baseline ``name`` the learning-rate ``schedule``: none
  when it schedules itself (its defaults carry schedule keys) or takes only a
  constant rate."""
  spec = optimizers.spec(name)
  if not spec.schedulable or any(k in spec.defaults for k in _OWN_SCHEDULE_KEYS):
    return {}
  return {"schedule": schedule}


def store_outcome(db, suite, e, purpose: str, task: str, seed: int, config, steps: int, out,
                  stats: Dict[str, int], log: Callable[[str], None]) -> None:
  """Counts a finished run in ``stats`` (trained / errors / diverged), logs an error's
  first line, and stores the run with the package and JAX versions."""
  stats["trained"] += 1
  if out.status == "error":
    stats["errors"] += 1
    log(f"error: {e.name} on {task} ({purpose}, seed {seed}): {out.error.splitlines()[0]}")
  elif out.status == "diverged":
    stats["diverged"] += 1
  db.add_run(suite=suite, ruleset=e.ruleset, optimizer=e.name, purpose=purpose, task=task,
             seed=seed, config=config, steps=steps, status=out.status,
             error=out.error or None, train_loss=out.train_loss, eval_steps=out.eval_steps,
             valid_loss=out.valid_loss, valid_error=getattr(out, "valid_error", None),
             wall_time=out.wall_time, package_version=metaopt.__version__,
             jax_version=jax.__version__)


def _run_missing(db, suite, e, task, purpose, configs, seeds, steps, eval_every,
                 retry_errors, stats, log) -> List[Dict[str, Any]]:
  """Stores the (config, seed) pairs not stored yet and returns the stored rows of all
  of them, in order.

  A batch is always trained whole, even when a killed job stored part of it: a
  vmapped program's float rounding depends on its batch width, so training only the
  missing pairs would give them different last bits than an uninterrupted job.
  The recomputed stored pairs are counted in ``stats["recomputed"]``, not stored again."""
  missing = [i for i, (c, s) in enumerate(zip(configs, seeds))
             if not db.has_run(suite.hash, e.ruleset, e.name, purpose, task.name, s, c,
                               include_errors=not retry_errors)]
  stats["skipped"] += len(configs) - len(missing)
  if missing:
    outs, compiled = execute_batch(task, e, configs, seeds, steps, eval_every,
                                   suite.eval_batches)
    stats["compiled"] += compiled
    stats["recomputed"] += len(configs) - len(missing)
    for i in missing:
      store_outcome(db, suite, e, purpose, task.name, seeds[i], configs[i], steps, outs[i],
                    stats, log)
  rows = []
  for c, s in zip(configs, seeds):
    rows += db.runs(suite.hash, purpose, ruleset=e.ruleset, optimizer=e.name, task=task.name,
                    seed=s, config=config_key(c))
  return rows


def plan(suite: S.Suite, e: E.Entrant, st: S.SuiteTask):
  """``(configs, seeds, steps)`` of entrant ``e`` on ``st``: every trial of every study
  (tuned) or one run per study seed (self-tuning)."""
  steps = suite.budget(st, e.ruleset)
  if e.tuned:
    configs, seeds = [], []
    for s in suite.seeds:
      configs += trial_configs(e.source, suite.trials, seed=s,
                               space=suite.search_space(e.source))
      seeds += [suite.trial_seed(s, i) for i in range(suite.trials)]
    return configs, seeds, steps
  cfg = e.fixed_config(steps)
  return [cfg] * len(suite.seeds), [suite.trial_seed(s, 0) for s in suite.seeds], steps


def resolve_entrants(specs: Optional[Sequence[Any]], suite: S.Suite,
                     log: Callable[[str], None] = print) -> List[E.Entrant]:
  """Entrants from specs (``"adam"``, ``"adam@defaults"``, ``"lopt:NAME"``, a
  ``.safetensors`` path, or ``Entrant`` objects; default ``E.default_entrants()``),
  with the suite's tuned reference added when missing. Two entrants with one label
  (name and ruleset), e.g. two files ``a/opt.safetensors`` and ``b/opt.safetensors``,
  are refused: the database keys runs by that label."""
  specs = list(specs) if specs is not None else E.default_entrants()
  ents = [s if isinstance(s, E.Entrant) else E.parse(s) for s in specs]
  seen = {}
  for spec, e in zip(specs, ents):
    label = (e.name, e.ruleset)
    if label in seen:
      raise ValueError(f"two entrants are both called {e.name!r} ({seen[label]!r} and "
                       f"{spec!r}); rename one of the files.")
    seen[label] = spec if isinstance(spec, str) else e.source
  ref = S.reference_name(suite)
  if not any(e.name == ref and e.ruleset == "tuned" for e in ents):
    log(f"adding tuned {ref} (the reference of the normalized speedups)")
    ents.insert(0, E.baseline(ref))
  return ents


def run_leaderboard(suite, optimizers_: Optional[Sequence[Any]] = None,
                    db_path: str = "leaderboard.db", progress: bool = True,
                    retry_errors: bool = False, log: Callable[[str], None] = print,
                    only_tasks: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Runs (or resumes) ``suite`` (a name, path or ``Suite``) for the entrants
  ``optimizers_`` (``resolve_entrants``); see ``run``."""
  suite = S.load(suite) if isinstance(suite, str) else suite
  return run(suite, resolve_entrants(optimizers_, suite, log), db_path, progress=progress,
             retry_errors=retry_errors, log=log, only_tasks=only_tasks)


def run(suite: S.Suite, ents: Sequence[E.Entrant], db_path: str, progress: bool = True,
        retry_errors: bool = False, log: Callable[[str], None] = print,
        only_tasks: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Runs (or resumes) the AlgoPerf protocol of ``suite`` for ``ents`` (see module
  docstring), on ``only_tasks`` when given (e.g. to split a suite over processes
  with separate databases). Returns run statistics like ``run_leaderboard``."""
  missing_targets = [t.task for t in suite.tasks if not t.target]
  if missing_targets:
    log(f"note: suite {suite.id} has no frozen targets yet for {missing_targets}: runs are "
        "trained (they do not depend on the targets) but cannot be scored until "
        f"`metaopt leaderboard set-targets --suite {suite.name}` has run.")
  # Runs do not depend on the targets: they are stored under the hash of the suite
  # without its targets, so freezing the targets keeps them.
  suite = setup_suite(suite)
  stats = {"trained": 0, "skipped": 0, "errors": 0, "diverged": 0, "compiled": 0,
           "recomputed": 0, "planned": 0}
  bar = None
  todo = [st for st in suite.tasks if only_tasks is None or st.task in only_tasks]
  if only_tasks is not None:
    for name in only_tasks:
      suite.task(name)  # An unknown name raises listing the suite's tasks.
  for st in todo:
    for e in ents:
      stats["planned"] += len(plan(suite, e, st)[0])
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=stats["planned"], desc=f"leaderboard {suite.id}", unit="run")
  with runner_lock(db_path), ResultsDB(db_path) as db:
    db.register_suite(suite)
    for e in ents:
      db.upsert_optimizer(e.name, e.ruleset, e.kind, e.source, _training_classes(e),
                          e.meta_cost_hours, e.description)
    timings = db.timings(suite.hash)
    try:
      for st in todo:
        task = None
        for e in ents:
          configs, seeds, steps = plan(suite, e, st)
          if bar is not None:
            bar.set_postfix_str(f"{e.name} on {st.task}")
          stored = all(db.has_run(suite.hash, e.ruleset, e.name, "trial", st.task, s, c,
                                  include_errors=not retry_errors)
                       for c, s in zip(configs, seeds))
          timed = (e.name, e.ruleset, st.task) in timings
          if stored and timed:
            stats["skipped"] += len(configs)
          else:
            task = task or task_registry.get(st.task)
            _run_missing(db, suite, e, task, "trial", configs, seeds, steps, st.eval_every,
                         retry_errors, stats, log)
            if not timed:
              cfg = dict(configs[0]) if not e.tuned else dict(
                  optimizers.spec(e.source).defaults)
              try:
                compile_s = []
                secs = time_steps(task, e, cfg, steps, TIMING_STEPS, TIMING_REPEATS,
                                  compile_seconds=compile_s)
                db.set_timing(suite.hash, e.ruleset, e.name, st.task, cfg, TIMING_STEPS, secs)
                db.set_compile_time(suite.hash, e.ruleset, e.name, st.task, compile_s[0])
              except Exception as ex:  # pylint: disable=broad-except
                log(f"timing failed: {e.name} on {st.task}: {type(ex).__name__}: {ex}")
          if bar is not None:
            bar.update(len(configs))
    finally:
      if bar is not None:
        bar.close()
  stats.update(suite=suite.id, db=db_path)
  return stats


def setup_suite(suite: S.Suite) -> S.Suite:
  """``suite`` with ``hash = suite.setup_hash`` (what its runs are stored under)."""
  return S.Suite(**{**{f: getattr(suite, f) for f in suite.__dataclass_fields__},
                    "hash": suite.setup_hash})


def _training_classes(e: E.Entrant) -> Dict[str, List[str]]:
  return {"families": list(e.trained_on), "datasets": list(e.trained_on_datasets),
          "architectures": list(e.trained_on_architectures),
          "synthetic_architectures": list(e.trained_on_synthetic_architectures)}


def set_targets(suite: S.Suite, db_path: str, out_path: Optional[str] = None,
                progress: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Runs (or resumes) the target-setting runs of ``suite`` and writes the suite file
  with every task's frozen ``target`` to ``out_path`` (default: the shipped file of
  the suite, whose new hash is then pinned in ``LOCK.json``; a pinned version with
  other targets is refused: bump its version). Returns the new suite content.

  Target-setting runs are stored under ``suite.setup_hash`` (the content without
  targets), so re-running after the targets were written resumes them.
  """
  setters = [b for b in suite.target_baselines if b in optimizers.names()]
  if not setters:
    raise ValueError(f"none of the target-setting baselines {list(suite.target_baselines)} "
                     "is registered.")
  skipped = [b for b in suite.target_baselines if b not in setters]
  if skipped:
    log(f"target-setting baselines not registered (skipped): {skipped}")
  setup = setup_suite(suite)
  stats = {"trained": 0, "skipped": 0, "errors": 0, "diverged": 0, "compiled": 0, "recomputed": 0}
  content = json.loads(json.dumps(suite.content))
  with runner_lock(db_path), ResultsDB(db_path) as db:
    for k, st in enumerate(suite.tasks):
      task = task_registry.get(st.task)
      per_setter, chosen = {}, {}
      for name in setters:
        e = E.baseline(name)
        e = E.Entrant(**{**{f: getattr(e, f) for f in e.__dataclass_fields__},
                         "ruleset": "tuned"})
        extra = scheduled(name, suite.target_schedule)
        configs = trial_configs(name, suite.target_trials, suite.target_tuning_seed, extra,
                                space=suite.search_space(name))
        seeds = [suite.target_tuning_seed + i for i in range(len(configs))]
        rows = _run_missing(db, setup, e, task, "target_tune", configs, seeds, st.steps,
                            st.eval_every, False, stats, log)
        scores = [scoring.best_valid(r["valid_loss"]) if r["status"] == "ok" else np.inf
                  for r in rows]
        best = configs[int(np.argmin(scores))]
        reps = _run_missing(db, setup, e, task, "target", [best] * len(suite.target_seeds),
                            list(suite.target_seeds), st.steps, st.eval_every, False, stats,
                            log)
        per_setter[name] = [r["valid_loss"] if r["valid_loss"] is not None else [np.inf]
                            for r in reps]
        chosen[name] = (best, reps)
        if progress:
          log(f"  {st.task}: {name} median best valid "
              f"{np.median([scoring.best_valid(c) for c in per_setter[name]]):.4g}")
      tgt = scoring.target_from_runs(per_setter)
      best_cfg, reps = chosen[tgt["setter"]]
      errs = [np.nanmin(r["valid_error"]) for r in reps
              if r["valid_error"] is not None and np.any(np.isfinite(r["valid_error"]))]
      content["tasks"][k]["target"] = {
          "valid_loss": tgt["valid_loss"],
          "valid_error": float(np.median(errs)) if errs else None,
          "setter": tgt["setter"], "config": best_cfg,
          "per_seed": [scoring.best_valid(c) for c in per_setter[tgt["setter"]]],
          "medians": tgt["medians"]}
      log(f"target {st.task}: valid loss {tgt['valid_loss']:.4g} by {tgt['setter']}")
  path = out_path or S.SHIPPED.get(suite.name)
  shipped = suite.name in S.SHIPPED and os.path.abspath(path) == os.path.abspath(
      S.SHIPPED.get(suite.name))
  new = S.from_dict(content, where=path)
  lock = S.read_lock()
  if shipped and new.id in lock and lock[new.id] != new.hash:
    raise S.SuiteError(f"{new.id} is released with other targets (pinned hash "
                       f"{lock[new.id]}); bump the suite's 'version' before setting new ones.")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(content, f, indent=1)
    f.write("\n")
  os.replace(tmp, path)
  if shipped:
    S.pin(new)  # The frozen targets are part of the released version.
  log(f"wrote {path} ({stats['trained']} runs trained, {stats['skipped']} stored)")
  return content
