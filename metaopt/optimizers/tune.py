"""Hyper-parameter tuning of a baseline on one task: grid or random search.

Seed rule: every trial of a study trains with the same seed,
``TUNE_SEED_OFFSET + seed`` (common random numbers: trials differ only in their
hyper-parameters), and is scored on the ``inner_valid`` split. Evaluation runs
(leaderboard, reports) use seeds below ``TUNE_SEED_OFFSET`` and the ``test`` /
``outer_valid`` splits, so tuning never sees an evaluation seed. Random-search configs
are drawn from ``jax.random.fold_in(PRNGKey(seed), trial_index)``.

A trial whose loss turns NaN/inf (diverged) is kept with score ``+inf``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.optimizers import registry
from metaopt.optimizers.space import Choice
from metaopt.train import (TransformationWithObjective, _chunk_sizes, eval_params, make_eval,
                           make_step, seed_keys, train)
from tasks.base import Task

#: Tuning trains with seed ``TUNE_SEED_OFFSET + seed``; evaluation seeds stay below it.
TUNE_SEED_OFFSET = 10_000
METHODS = ("grid", "random")
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
                   search: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
  """The trial configs (searched keys only) ``tune`` would run, in order.

  Args:
    name: baseline name.
    method: ``grid`` (the product of ``grid_points`` values per numeric axis and all
      options of each ``Choice``) or ``random`` (``num_trials`` independent samples).
    num_trials: random: number of samples (default 10); grid: an upper bound that
      sets ``grid_points`` when that is not given.
    grid_points: values per numeric grid axis (default from ``num_trials``, else 5).
    search: which hyper-parameters to search (default: the whole search space);
      ``("learning_rate",)`` is the classic learning-rate sweep.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown tuning method {method!r}; expected one of {METHODS}.")
  space = registry.spec(name).search_space
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


@dataclasses.dataclass
class SweepRun:
  """Curves of one learning rate of ``train_lr_batch`` (fields as in ``TrainResult``)."""
  train_loss: np.ndarray
  eval_steps: np.ndarray
  valid_loss: np.ndarray
  diverged: bool


def train_lr_batch(task: Task, name: str, learning_rates: Sequence[float], steps: int,
                   seed: int = 0, fixed: Optional[Dict[str, Any]] = None,
                   schedule: str = "constant", eval_every: int = 50, eval_batches: int = 4,
                   chunk: int = 50) -> List[SweepRun]:
  """Trains one run per learning rate at once (``vmap`` over the learning rate, held
  as a traced hyper-parameter with ``optax.inject_hyperparams``).

  Each run equals ``train(task, get(name, learning_rate=lr, **fixed), steps, seed)``:
  same init, batches and evaluation keys; a diverged run's curve is cut like
  ``train`` cuts it (NaN after the chunk where it diverged, NaN validation at
  ``steps``). Returns one record per learning rate with ``train_loss``,
  ``eval_steps``, ``valid_loss``, ``diverged``.
  """
  fixed = dict(fixed or {})
  lrs = jnp.asarray(learning_rates, jnp.float32)

  def make(learning_rate):
    return registry.get(name, schedule=schedule, total_steps=steps,
                        learning_rate=learning_rate, **fixed)

  opt = optax.inject_hyperparams(make)(learning_rate=1.0)
  if isinstance(make(1.0), TransformationWithObjective):
    opt = TransformationWithObjective(opt.init, opt.update)
  k_init, step_keys, k_eval = seed_keys(seed, steps)
  params = task.init(k_init)
  # The update reads the learning rate from the state, so one ``opt`` serves all.
  states = jax.vmap(lambda lr: optax.inject_hyperparams(make)(learning_rate=lr)
                    .init(params))(lrs)
  batch_params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, lrs.shape + x.shape),
                                        params)
  step = jax.vmap(make_step(task, opt), in_axes=(0, 0, None, None))
  evaluate = make_eval(task, num_batches=eval_batches)

  @jax.jit
  def run_chunk(params, states, data, keys):
    def body(carry, k):
      p, s, loss = step(*carry, data, k)
      return (p, s), loss
    (params, states), losses = jax.lax.scan(body, (params, states), keys)
    return params, states, losses.T

  @jax.jit
  def run_eval(params, states, data, key):
    return jax.vmap(lambda p, s: evaluate(eval_params(s, p), data, key))(params, states)

  losses, evals, done = [], [], 0
  for n in _chunk_sizes(steps, min(chunk, eval_every), eval_every):
    batch_params, states, chunk_losses = run_chunk(batch_params, states, task.data,
                                                   step_keys[done:done + n])
    losses.append(np.asarray(chunk_losses, np.float64))
    done += n
    if done % eval_every == 0 or done == steps:
      v = run_eval(batch_params, states, task.data, jax.random.fold_in(k_eval, done))
      evals.append((done, np.asarray(v, np.float64)))
  losses = np.concatenate(losses, axis=1)

  out, ends = [], np.cumsum(_chunk_sizes(steps, min(chunk, eval_every), eval_every))
  for i in range(len(lrs)):
    bad = np.flatnonzero(~np.isfinite(losses[i]))
    if not len(bad):
      out.append(SweepRun(losses[i], np.array([s for s, _ in evals]),
                         np.array([v[i] for _, v in evals]), False))
      continue
    cut = int(ends[np.searchsorted(ends, bad[0], side="right")])  # End of that chunk.
    curve = np.where(np.arange(steps) < cut, losses[i], np.nan)
    kept = [(s, v[i]) for s, v in evals if s < cut]
    out.append(SweepRun(curve, np.array([s for s, _ in kept] + [steps]),
                       np.array([v for _, v in kept] + [np.nan]), True))
  return out


def tune(task: Union[Task, str], name: str, steps: int, num_trials: Optional[int] = None,
         seed: int = 0, method: str = "grid", objective: str = "final_valid",
         grid_points: Optional[int] = None, search: Optional[Sequence[str]] = None,
         fixed: Optional[Dict[str, Any]] = None, schedule: str = "constant",
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
    schedule: learning-rate schedule over ``steps`` (``metaopt.optimizers.SCHEDULES``).
    eval_every: steps between validation losses (default ``steps // 10``).
    progress: a progress bar over trials (sequential path only).
    vectorize: when the trials differ only in ``learning_rate``, train them all at
      once with ``train_lr_batch`` (memory: one copy of params and optimizer state per
      trial); otherwise one ``train`` call per trial.
  """
  if isinstance(task, str):
    import tasks  # pylint: disable=import-outside-toplevel
    task = tasks.get(task)
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; expected one of {OBJECTIVES}.")
  fixed = dict(fixed or {})
  configs = search_configs(name, method, num_trials, seed, grid_points, search)
  overlap = sorted(set(fixed) & set(configs[0]))
  if overlap:
    raise ValueError(f"{overlap} are both searched and fixed; drop them from one.")
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
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    iterator = tqdm(configs, desc=f"tune {name}", unit="trial")
  for cfg in iterator:
    opt = registry.get(name, schedule=schedule, total_steps=steps, **fixed, **cfg)
    res = train(task, opt, steps, seed=train_seed, eval_every=eval_every,
                eval_batches=eval_batches)
    trials.append(Trial(cfg, score_of(res.valid_loss, res.diverged, objective),
                        res.train_loss, res.eval_steps, res.valid_loss, res.diverged))
  best = min(range(len(trials)), key=lambda i: trials[i].score)
  best_config = registry.config(name, **fixed, **trials[best].config)
  return TuneResult(name, best_config, trials[best].score, trials, train_seed)
