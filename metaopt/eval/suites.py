"""Versioned benchmark suites: held-out tasks, budgets, seeds and frozen targets.

A suite is a JSON file ``metaopt/eval/suites/<name>.json`` scored by the one
leaderboard protocol (``metaopt.eval.protocol``, AlgoPerf v0.6)::

  {"name": "v3", "version": 1, "description": "...",
   "protocol": "algoperf",                # the only protocol (kept for old files)
   "sealed": true,                        # its datasets are held out (tasks.sealed)
   "seeds": [0, 1, 2],                    # one study per seed
   "trials": 5, "search": "quasirandom",  # external tuning: trials per study
   "budget": {"external": "4/3", "self_tuning": "2"},   # x the target-setting steps
   "speedup_reference": ["nadamw"],       # first registered one: speedup baseline
   "bootstrap": {"reps": 2000, "seed": 0},
   "target_setting": {"seeds": [1000, ...], "tuning_seed": 2000, "trials": 16,
                      "baselines": ["nadamw"], "schedule": "warmup_cosine"},
   "search_spaces": {"nadamw": {"learning_rate": ["log_uniform", 1e-4, 0.3], ...}},
                                          # frozen spaces (target setting and tuning)
   "tuning_seed": 3000, "r_max": 4.0,
   "eval_batches": 4,                     # batches per evaluation of a task without a
                                          # fixed evaluation set (Task.eval_batches)
   "tasks": [{"task": ..., "steps": 1200, # the target-setting run's steps
              "eval_every": 50, "families": [...],
              "target": {"valid_loss": ..., "valid_error": ..., ...}}]}

``metaopt leaderboard set-targets`` fills each task's ``target`` (frozen in the
file, so covered by its hash).

Every run stored in the results database records the suite's name, version and
content hash (SHA-256 of the canonical JSON). Versions are immutable: the hash of
every released version is pinned in ``suites/LOCK.json``, and loading a suite whose
content no longer matches the pinned hash of its version is refused (make a new
version instead), so old results stay tied to the exact tasks they were run on.
"""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from metaopt.optimizers.space import axis_from_json
from tasks.registry import Registry, unknown_name_message

SUITES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suites")
LOCK_PATH = os.path.join(SUITES_DIR, "LOCK.json")

_TOP_KEYS = {"name", "version", "description", "seeds", "tuning_seed", "r_max",
             "eval_batches", "tasks", "protocol", "trials", "search", "budget",
             "speedup_reference", "bootstrap", "target_setting", "search_spaces", "sealed"}
_TASK_KEYS = {"task", "steps", "eval_every", "families", "target"}
_TARGET_SETTING_KEYS = {"seeds", "tuning_seed", "trials", "baselines", "schedule"}
PROTOCOLS = ("algoperf",)
#: Trial ``i`` of the study with seed ``s`` trains with seed ``STUDY_STRIDE * s + i``.
STUDY_STRIDE = 100


class SuiteError(ValueError):
  """A suite file is malformed, unknown, or changed without a version bump."""


@dataclasses.dataclass(frozen=True)
class SuiteTask:
  """One task of a suite.

  Attributes:
    task: registry name (``tasks.get(task)``).
    steps: step budget.
    eval_every: validation loss every this many steps (divides ``steps``).
    families: task-family names this task belongs to (leakage guard).
    target: the frozen target: ``valid_loss`` (the target), ``valid_error``
      (classifiers), ``setter``, ``config``, ``per_seed``; None until set.
  """
  task: str
  steps: int
  eval_every: int
  families: Tuple[str, ...] = ()
  target: Optional[Dict[str, Any]] = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class Suite:
  """A loaded, validated suite (see module docstring for the fields)."""
  name: str
  version: int
  description: str
  seeds: Tuple[int, ...]
  tuning_seed: int
  r_max: float
  eval_batches: int
  tasks: Tuple[SuiteTask, ...]
  content: Dict[str, Any] = dataclasses.field(compare=False, repr=False)
  hash: str = ""
  protocol: str = "algoperf"
  trials: int = 5
  search: str = "quasirandom"
  budget_external: fractions.Fraction = fractions.Fraction(4, 3)
  budget_self_tuning: fractions.Fraction = fractions.Fraction(3)
  speedup_reference: Tuple[str, ...] = ("nadamw", "adam")
  bootstrap_reps: int = 2000
  bootstrap_seed: int = 0
  target_seeds: Tuple[int, ...] = ()
  target_tuning_seed: int = 2000
  target_trials: int = 8
  target_baselines: Tuple[str, ...] = ("nadamw", "adamw", "adam")
  target_schedule: str = "warmup_cosine"
  search_spaces: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict,
                                                                compare=False)
  sealed: bool = False

  def search_space(self, baseline: str) -> Optional[Dict[str, Any]]:
    """The search space the suite freezes for ``baseline`` (used by its target
    setting and its external tuning), or None (the baseline's registry space)."""
    return self.search_spaces.get(baseline)

  @property
  def id(self) -> str:
    return f"{self.name}@{self.version}"

  def budget(self, task: "SuiteTask", ruleset: str) -> int:
    """Steps an entrant of ``ruleset`` gets on ``task``: the target-setting run's
    steps times the suite's external (AlgoPerf: 4/3) or self-tuning factor."""
    factor = self.budget_external if ruleset == "tuned" else self.budget_self_tuning
    return budget_steps(task.steps, factor)

  def trial_seed(self, study_seed: int, trial: int) -> int:
    """Training seed of trial ``trial`` of the study with seed ``study_seed``."""
    return STUDY_STRIDE * study_seed + trial

  @property
  def setup_hash(self) -> str:
    """Hash of the content without the frozen targets: what target-setting runs
    are stored under (setting the targets must not orphan them)."""
    content = dict(self.content)
    content["tasks"] = [{k: v for k, v in t.items() if k != "target"}
                        for t in content["tasks"]]
    return content_hash(content)


  def task(self, name: str) -> SuiteTask:
    for t in self.tasks:
      if t.task == name:
        return t
    raise KeyError(f"Suite {self.id}: "
                   + unknown_name_message("task", name, [t.task for t in self.tasks]))



def reference_name(suite: "Suite") -> str:
  """The first registered baseline of ``suite.speedup_reference`` (the tuned
  baseline every speedup is relative to)."""
  from metaopt import optimizers  # pylint: disable=import-outside-toplevel
  for name in suite.speedup_reference:
    if name in optimizers.names():
      return name
  return suite.speedup_reference[-1]


def budget_steps(steps: int, factor: fractions.Fraction) -> int:
  """``steps * factor``, which must be a whole number of steps."""
  b = steps * fractions.Fraction(factor)
  if b.denominator != 1:
    raise SuiteError(f"budget {steps} x {factor} = {b} is not a whole number of steps; "
                     "choose target-setting steps divisible by the factor's denominator.")
  return int(b)


def content_hash(content: Dict[str, Any]) -> str:
  """SHA-256 (hex, first 16 chars) of the canonical JSON of a suite's content."""
  canon = json.dumps(content, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _shipped_suites() -> Registry[str]:
  shipped = Registry("suite")
  for file in sorted(os.listdir(SUITES_DIR)):
    if file.endswith(".json") and file != "LOCK.json":
      shipped.register(file[:-len(".json")], os.path.join(SUITES_DIR, file))
  return shipped


#: Shipped suites: name -> path of its JSON file in ``SUITES_DIR``.
SHIPPED: Registry[str] = _shipped_suites()


def suite_names() -> List[str]:
  """Names of the shipped suites (``load`` also takes any suite file's path)."""
  return SHIPPED.names()


def read_lock() -> Dict[str, str]:
  if not os.path.exists(LOCK_PATH):
    return {}
  with open(LOCK_PATH) as f:
    return json.load(f)


def _require(cond: bool, where: str, msg: str) -> None:
  if not cond:
    raise SuiteError(f"{where}: {msg}")


def from_dict(content: Dict[str, Any], where: str = "suite",
              lock: Optional[Dict[str, str]] = None) -> Suite:
  """Validates ``content`` and builds a Suite.

  Args:
    content: the parsed JSON.
    where: file name for error messages.
    lock: ``{"name@version": hash}``; a pinned version whose hash differs is
      refused. ``None`` skips the check (suites built in tests).
  """
  _require(isinstance(content, dict), where, "a suite must be a JSON object.")
  unknown = set(content) - _TOP_KEYS
  _require(not unknown, where,
           f"unknown key(s) {sorted(unknown)}; known keys: {sorted(_TOP_KEYS)}.")
  for key in ("name", "version", "tasks", "seeds"):
    _require(key in content, where, f"missing required key {key!r}.")
  _require(isinstance(content["version"], int) and content["version"] >= 1, where,
           f"'version' must be a positive integer, got {content['version']!r}.")
  seeds = tuple(int(s) for s in content["seeds"])
  _require(len(seeds) >= 1 and len(set(seeds)) == len(seeds), where,
           f"'seeds' must be a non-empty list of distinct integers, got {list(seeds)}.")
  tuning_seed = int(content.get("tuning_seed", 1000))
  _require(tuning_seed not in seeds, where,
           f"tuning_seed {tuning_seed} is also an evaluation seed; tuning must use a "
           "separate validation seed.")
  tasks = []
  _require(isinstance(content["tasks"], list) and content["tasks"], where,
           "'tasks' must be a non-empty list.")
  for i, t in enumerate(content["tasks"]):
    w = f"{where}: tasks[{i}]"
    _require(isinstance(t, dict) and "task" in t and "steps" in t, w,
             "each task needs at least 'task' and 'steps'.")
    unknown = set(t) - _TASK_KEYS
    _require(not unknown, w, f"unknown key(s) {sorted(unknown)}; known: {sorted(_TASK_KEYS)}.")
    steps = int(t["steps"])
    every = int(t.get("eval_every", steps))
    _require(steps > 0 and every > 0 and steps % every == 0, w,
             f"'eval_every' ({every}) must be positive and divide 'steps' ({steps}).")
    tasks.append(SuiteTask(str(t["task"]), steps, every, tuple(t.get("families", ())),
                           t.get("target")))
  names = [t.task for t in tasks]
  _require(len(set(names)) == len(names), where, f"duplicate task names in {names}.")
  h = content_hash(content)
  suite = Suite(
      name=str(content["name"]), version=int(content["version"]),
      description=str(content.get("description", "")), seeds=seeds, tuning_seed=tuning_seed,
      r_max=float(content.get("r_max", 4.0)),
      eval_batches=int(content.get("eval_batches", 4)), tasks=tuple(tasks), content=content,
      hash=h, **_algoperf_fields(content, where))
  _check_algoperf(suite, where)
  _require(suite.r_max > 1.0, where, f"r_max must be > 1, got {suite.r_max}.")
  if lock is not None and suite.id in lock and lock[suite.id] != h:
    raise SuiteError(
        f"{where}: suite {suite.id} was changed without bumping its version (content hash "
        f"{h} != pinned {lock[suite.id]} in {LOCK_PATH}). Released versions are immutable: "
        "restore the file, or save the new content as a new version (new 'version' "
        "and/or new file name) and pin it.")
  return suite


def _algoperf_fields(content: Dict[str, Any], where: str) -> Dict[str, Any]:
  protocol = str(content.get("protocol", "algoperf"))
  _require(protocol in PROTOCOLS, where, f"'protocol' must be one of {PROTOCOLS}, got "
           f"{protocol!r} (the v1 protocol was retired with leaderboard v3).")
  budget = dict(content.get("budget", {}))
  ts = dict(content.get("target_setting", {}))
  unknown = set(ts) - _TARGET_SETTING_KEYS
  _require(not unknown, where, f"unknown 'target_setting' key(s) {sorted(unknown)}; known: "
           f"{sorted(_TARGET_SETTING_KEYS)}.")
  boot = dict(content.get("bootstrap", {}))
  try:
    ext = fractions.Fraction(str(budget.get("external", "4/3")))
    self_t = fractions.Fraction(str(budget.get("self_tuning", "3")))
  except (ValueError, ZeroDivisionError) as e:
    raise SuiteError(f"{where}: 'budget' factors must be numbers or fractions like \"4/3\" "
                     f"({e}).") from e
  spaces = {}
  for name, axes in dict(content.get("search_spaces", {})).items():
    _require(isinstance(axes, dict) and axes, where,
             f"'search_spaces.{name}' must map hyper-parameters to axes.")
    try:
      spaces[str(name)] = {str(k): axis_from_json(v) for k, v in axes.items()}
    except ValueError as e:
      raise SuiteError(f"{where}: search_spaces.{name}: {e}") from e
  return dict(
      search_spaces=spaces, sealed=bool(content.get("sealed", False)),
      protocol=protocol, trials=int(content.get("trials", 5)),
      search=str(content.get("search", "quasirandom")),
      budget_external=ext, budget_self_tuning=self_t,
      speedup_reference=tuple(content.get("speedup_reference", ("nadamw", "adam"))),
      bootstrap_reps=int(boot.get("reps", 2000)), bootstrap_seed=int(boot.get("seed", 0)),
      target_seeds=tuple(int(x) for x in ts.get("seeds", ())),
      target_tuning_seed=int(ts.get("tuning_seed", 2000)),
      target_trials=int(ts.get("trials", 8)),
      target_baselines=tuple(ts.get("baselines", ("nadamw", "adamw", "adam"))),
      target_schedule=str(ts.get("schedule", "warmup_cosine")))


def _check_algoperf(suite: Suite, where: str) -> None:
  _require(suite.trials >= 1, where, f"'trials' must be >= 1, got {suite.trials}.")
  _require(len(suite.seeds) >= 3, where, "AlgoPerf scoring takes the median over >= 3 "
           f"studies: give >= 3 'seeds', got {list(suite.seeds)}.")
  _require(len(suite.target_seeds) >= 5, where, "'target_setting.seeds' needs >= 5 seeds, got "
           f"{list(suite.target_seeds)}.")
  trial_seeds = {suite.trial_seed(s, i) for s in suite.seeds for i in range(suite.trials)}
  overlap = (trial_seeds | set(suite.seeds)) & (set(suite.target_seeds)
                                                | {suite.target_tuning_seed})
  _require(not overlap, where, f"target-setting seeds overlap evaluation seeds {sorted(overlap)}"
           "; they must be separate.")
  _require(suite.budget_external >= 1 and suite.budget_self_tuning >= 1, where,
           "budget factors must be >= 1.")
  for t in suite.tasks:
    for ruleset in ("tuned", "self_tuning"):
      b = suite.budget(t, ruleset)
      _require(b % t.eval_every == 0, where, f"task {t.task}: eval_every ({t.eval_every}) must "
               f"divide the {ruleset} budget ({b} steps).")


def load(name_or_path: str) -> Suite:
  """Loads a shipped suite by name (``v3``, ``demo``) or a suite JSON file by path."""
  if os.path.exists(name_or_path):
    path = name_or_path
  elif name_or_path in SHIPPED:
    path = SHIPPED.get(name_or_path)
  else:
    raise SuiteError(f"{unknown_name_message('suite', name_or_path, suite_names())} It is "
                     "not a suite file's path either.")
  with open(path) as f:
    try:
      content = json.load(f)
    except json.JSONDecodeError as e:
      raise SuiteError(f"{path}: not valid JSON ({e}).") from e
  return from_dict(content, where=path, lock=read_lock())


def pin(suite: Suite) -> None:
  """Pins ``suite``'s hash in LOCK.json (done once, when a version is released)."""
  lock = read_lock()
  if suite.id in lock and lock[suite.id] != suite.hash:
    raise SuiteError(f"{suite.id} is already pinned to a different hash; bump the version.")
  lock[suite.id] = suite.hash
  tmp = LOCK_PATH + ".tmp"
  with open(tmp, "w") as f:
    json.dump(dict(sorted(lock.items())), f, indent=2)
    f.write("\n")
  os.replace(tmp, LOCK_PATH)
