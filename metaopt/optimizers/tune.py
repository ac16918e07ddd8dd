"""Hyper-parameter tuning of a baseline on one task: grid, random or quasi-random search.

Seed rule: every trial of a study trains with the same seed,
``TUNE_SEED_OFFSET + seed`` (common random numbers: trials differ only in their
hyper-parameters), and is scored on the ``inner_valid`` split. Evaluation runs
(leaderboard, reports) use seeds below ``TUNE_SEED_OFFSET`` and the ``test`` /
``outer_valid`` splits, so tuning never sees an evaluation seed. Random-search configs
are drawn from ``jax.random.fold_in(PRNGKey(seed), trial_index)``; quasi-random configs
(AlgoPerf's tuning) map the points of ``quasirandom.shifted_halton(num_trials, axes,
seed)`` through each axis (``from_unit``), one Halton dimension per searched
hyper-parameter in sorted order.

A trial whose loss turns NaN/inf (diverged) is kept with score ``+inf``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import tasks
from metaopt import inner
from metaopt.optimizers import quasirandom, registry
from metaopt.optimizers.space import Choice
from tasks.base import Task

#: Tuning trains with seed ``TUNE_SEED_OFFSET + seed``; evaluation seeds stay below it.
TUNE_SEED_OFFSET = 10_000
METHODS = ("grid", "random", "quasirandom")
OBJECTIVES = ("final_valid", "best_valid")


class Trial(NamedTuple):
  """One tuning trial.

  Attributes:
    config: the searched hyper-parameters of this trial (the rest are defaults).
    score: objective on ``inner_valid`` (lower is better; ``inf`` if diverged).
    train_loss: (steps,) per-step training loss.
    eval_steps: (E,) evaluation steps.
    valid_loss: (E,) ``inner_valid`` loss at ``eval_steps``.
    diverged: a non-finite loss was seen.
  """
  config: Dict[str, Any]
  score: float
  train_loss: np.ndarray
  eval_steps: np.ndarray
  valid_loss: np.ndarray
  diverged: bool


@dataclasses.dataclass
class TuneResult:
  """Outcome of ``tune``.

  Attributes:
    optimizer: baseline name.
    best_config: full hyper-parameters of the best trial (defaults + searched +
      ``fixed``), ready for ``metaopt.optimizers.get(optimizer, **best_config)``.
    best_score: its score.
    trials: every trial, in search order.
    seed: the training seed all trials used.
  """
  optimizer: str
  best_config: Dict[str, Any]
  best_score: float
  trials: List[Trial]
  seed: int

  def summary(self) -> List[Dict[str, Any]]:
    """JSON-friendly rows ``{config, score, diverged}``."""
    return [{"config": t.config, "score": t.score, "diverged": t.diverged}
            for t in self.trials]


def _grid_points(axes: Dict[str, Any], num_trials: Optional[int]) -> int:
  """Points per numeric axis so that the whole grid has at most ``num_trials``."""
  numeric = [a for a in axes.values() if not isinstance(a, Choice)]
  if num_trials is None or not numeric:
    return 5
  categorical = math.prod(len(a.options) for a in axes.values() if isinstance(a, Choice))
  budget = num_trials / categorical
  points = int(math.floor(budget ** (1.0 / len(numeric)) + 1e-9))
  if points < 1:
    raise ValueError(f"num_trials={num_trials} is smaller than the {categorical} "
                     f"combinations of the categorical axes; raise num_trials.")
  return points


def search_configs(name: str, method: str = "grid", num_trials: Optional[int] = None,
                   seed: int = 0, grid_points: Optional[int] = None,
                   search: Optional[Sequence[str]] = None,
                   space: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
  """The trial configs (searched keys only) ``tune`` would run, in order.

  Args:
    name: baseline name.
    method: ``grid`` (the product of ``grid_points`` values per numeric axis and all
      options of each ``Choice``), ``random`` (``num_trials`` independent samples) or
      ``quasirandom`` (``num_trials`` points of a randomly shifted Halton sequence:
      evenly spread over the space; the shift is drawn from ``seed``).
    num_trials: random / quasirandom: number of configs (default 10); grid: an upper
      bound that sets ``grid_points`` when that is not given.
    grid_points: values per numeric grid axis (default from ``num_trials``, else 5).
    search: which hyper-parameters to search (default: the whole search space);
      ``("learning_rate",)`` is the classic learning-rate sweep.
    space: a search space (name -> axis) replacing the baseline's own (a suite
      freezes the spaces it tunes over); its keys must be hyper-parameters of
      ``name``.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown tuning method {method!r}; expected one of {METHODS}.")
  spec = registry.spec(name)
  if space is not None:
    extra = sorted(set(space) - set(spec.defaults))
    if extra:
      raise ValueError(f"{name}: search space keys {extra} are not its hyper-parameters "
                       f"{sorted(spec.defaults)}.")
  space = spec.search_space if space is None else space
  keys = list(search) if search is not None else sorted(space)
  unknown = [k for k in keys if k not in space]
  if unknown:
    raise ValueError(f"{name}: cannot search {unknown}; its search space has "
                     f"{sorted(space)}.")
  axes = {k: space[k] for k in keys}
  if method == "grid":
    n = grid_points if grid_points is not None else _grid_points(axes, num_trials)
    values = [axes[k].grid(n) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
  num_trials = 10 if num_trials is None else num_trials
  if num_trials < 1:
    raise ValueError(f"num_trials must be >= 1, got {num_trials}.")
  if method == "quasirandom":
    points = quasirandom.shifted_halton(num_trials, len(keys), seed)
    return [{k: axes[k].from_unit(u) for k, u in zip(keys, point)} for point in points]
  base = jax.random.PRNGKey(seed)
  configs = []
  for i in range(num_trials):
    subkeys = jax.random.split(jax.random.fold_in(base, i), len(keys))
    configs.append({k: axes[k].sample(sk) for k, sk in zip(keys, subkeys)})
  return configs


def score_of(valid_loss: np.ndarray, diverged: bool, objective: str) -> float:
  """``final_valid``: last validation loss; ``best_valid``: the lowest. ``inf`` for a
  diverged run or a non-finite score."""
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; expected one of {OBJECTIVES}.")
  if diverged or len(valid_loss) == 0:
    return math.inf
  value = float(valid_loss[-1]) if objective == "final_valid" else float(np.min(valid_loss))
  return value if math.isfinite(value) else math.inf


def _trial_result(run_out, steps: int, eval_every: int) -> inner.RunResult:
  _, losses, valid = run_out
  # The rule of ``metaopt.train.train`` (a blow-up is divergence), so that each trial
  # equals the run it stands for.
  return inner.mark_divergence(np.asarray(losses), inner.eval_schedule(steps, eval_every),
                               np.asarray(valid), blowup_factor=inner.DEFAULT_BLOWUP_FACTOR)


def train_lr_batch(task: Task, name: str, learning_rates: Sequence[float], steps: int,
                   seed: int = 0, fixed: Optional[Dict[str, Any]] = None,
                   schedule: Optional[str] = None, eval_every: int = 50,
                   eval_batches: int = 4) -> List[inner.RunResult]:
  """Trains one run per learning rate at once: ``inner.run`` vmapped over the learning
  rate, held as a traced hyper-parameter with ``optax.inject_hyperparams``.

  Each run equals ``metaopt.train.train(task, get(name, learning_rate=lr, **fixed),
  steps, seed)``: same init, batches, evaluation keys and divergence rule. Memory:
  one copy of the parameters and optimizer state per learning rate.
  """
  fixed = dict(fixed or {})

  def make(learning_rate):
    return registry.get(name, schedule=schedule, total_steps=steps,
                        learning_rate=learning_rate, **fixed)

  def one(lr, data):
    opt = optax.inject_hyperparams(make)(learning_rate=lr)
    return inner.run(task, opt, seed, data, steps, eval_every, eval_batches)

  out = jax.jit(jax.vmap(one, in_axes=(0, None)))(
      jnp.asarray(learning_rates, jnp.float32), task.data)
  out = jax.device_get(out)
  return [_trial_result(jax.tree_util.tree_map(lambda x, i=i: x[i], out), steps, eval_every)
          for i in range(len(learning_rates))]


def train_config(task: Task, opt: optax.GradientTransformation, steps: int, seed: int,
                 eval_every: int, eval_batches: int = 4) -> inner.RunResult:
  """One trial: ``inner.run`` compiled for ``opt``."""
  out = jax.jit(lambda data: inner.run(task, opt, seed, data, steps, eval_every,
                                       eval_batches))(task.data)
  return _trial_result(jax.device_get(out), steps, eval_every)


def tune(task: Union[Task, str], name: str, steps: int, num_trials: Optional[int] = None,
         seed: int = 0, method: str = "grid", objective: str = "final_valid",
         grid_points: Optional[int] = None, search: Optional[Sequence[str]] = None,
         fixed: Optional[Dict[str, Any]] = None, schedule: Optional[str] = None,
         eval_every: Optional[int] = None, eval_batches: int = 4,
         progress: bool = False, vectorize: bool = True) -> TuneResult:
  """Tunes baseline ``name`` on ``task`` (see the module docstring for the seed rule).

  Args:
    task: a ``Task`` or a registered task name.
    name: baseline name (``metaopt.optimizers.names()``).
    steps: training steps per trial.
    num_trials, method, grid_points, search: see ``search_configs``.
    seed: study seed (training seed ``TUNE_SEED_OFFSET + seed``; random-search draws).
    objective: ``final_valid`` or ``best_valid`` (see ``score_of``).
    fixed: hyper-parameters held fixed for every trial (override the defaults).
    schedule: ``None``: the optimizer's own schedule over ``steps`` (its searched or
      default ``warmup_fraction`` / ``lr_decay``); or one of
      ``metaopt.optimizers.SCHEDULES`` for every trial (see ``optimizers.get``).
    eval_every: steps between validation losses (default ``steps // 10``).
    progress: a progress bar over trials (sequential path only).
    vectorize: when the trials differ only in ``learning_rate``, train them all at
      once with ``train_lr_batch`` (memory: one copy of params and optimizer state per
      trial); otherwise one compiled ``inner.run`` per trial.
  """
  if isinstance(task, str):
    task = tasks.get(task)
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; expected one of {OBJECTIVES}.")
  fixed = dict(fixed or {})
  configs = search_configs(name, method, num_trials, seed, grid_points, search)
  overlap = sorted(set(fixed) & set(configs[0]))
  if overlap:
    raise ValueError(f"{overlap} are both searched and fixed; drop them from one.")
  clash = sorted(set(registry.SCHEDULE_HPARAMS) & (set(fixed) | set(configs[0])))
  if schedule is not None and clash:
    raise ValueError(f"schedule={schedule!r} replaces the schedule hyper-parameters "
                     f"{clash}: search without them (search=...) or leave schedule=None.")
  registry.config(name, **fixed)  # Fails early on bad keys.
  train_seed = TUNE_SEED_OFFSET + seed
  eval_every = eval_every or max(1, steps // 10)
  trials = []
  if vectorize and all(set(cfg) == {"learning_rate"} for cfg in configs):
    runs = train_lr_batch(task, name, [cfg["learning_rate"] for cfg in configs], steps,
                          seed=train_seed, fixed=fixed, schedule=schedule,
                          eval_every=eval_every, eval_batches=eval_batches)
    for cfg, res in zip(configs, runs):
      trials.append(Trial(cfg, score_of(res.valid_loss, res.diverged, objective),
                          res.train_loss, res.eval_steps, res.valid_loss, res.diverged))
    configs = []  # Done.
  iterator = configs
  if progress and configs:
    iterator = tqdm(configs, desc=f"tune {name}", unit="trial")
  for cfg in iterator:
    opt = registry.get(name, schedule=schedule, total_steps=steps, **fixed, **cfg)
    res = train_config(task, opt, steps, train_seed, eval_every, eval_batches)
    trials.append(Trial(cfg, score_of(res.valid_loss, res.diverged, objective),
                        res.train_loss, res.eval_steps, res.valid_loss, res.diverged))
  best = min(range(len(trials)), key=lambda i: trials[i].score)
  best_config = registry.config(name, **fixed, **trials[best].config)
  return TuneResult(name, best_config, trials[best].score, trials, train_seed)
