"""The inner loop: advance a task with an optax transformation.

Every place that trains something is a thin user of this module: ``metaopt.train``
(runs with a progress bar and logging), the leaderboard runner (one compiled program
per run), the vmapped sweep of ``metaopt.optimizers.tune``, the meta-training unroll
(``metaopt.meta.unroll``) and the L2O unroll on problem instances
(``metaopt.amortized.unroll``). An inner problem that needs something new extends
this module instead of copying it.

From small to large:

* ``update``: one call convention for every optax transformation. The loss goes in as
  ``value`` and the objective ``params -> loss`` as ``obj_fn`` (Sophia-H's Hessian
  estimate needs it), through ``optax.with_extra_args_support``; transformations that
  do not read them ignore them.
* ``apply_step``: one step on an objective ``params -> loss``.
* ``task_step``: one step on a task's training batch; ``run_steps`` scans it.
* ``evaluate`` and ``eval_params``: the mean loss over batches of a split, at the
  iterate to evaluate (the averaged iterate of a schedule-free optimizer).
* ``run_periods``: a whole run as one traceable function: a scan over evaluation
  periods, each a scan over steps followed by an evaluation. Pure and vmappable over
  runs (a learning-rate sweep) or over seeds.
* ``mark_divergence`` and ``RunResult``: the one divergence rule (non-finite loss,
  optionally a blow-up far above the initial loss: ``divergence_step``) and the one
  record of a run.

Seed rule (``seed_keys``): ``PRNGKey(seed)`` splits into init and train keys (and a
third, unused part); step ``i`` uses the ``i``-th of ``split(train_key, steps)``, split
again into a batch key and a loss key. Evaluation is deterministic and the same for
every run: a task's whole evaluation set (``Task.eval_batches``) or batches drawn with
the fixed ``eval_key()``. The same seed gives the same numbers in every user of the loop.
A stateful task (``Task.init_state``, e.g. BatchNorm statistics) carries its model
state beside the parameters and optimizer state (``initial_carry``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib

from tasks.base import Task

Objective = Callable[[Any], jax.Array]


def update(opt: optax.GradientTransformation, grads, state, params, value: jax.Array,
           obj_fn: Optional[Objective] = None):
  """``opt.update`` with the loss (``value``) and, when given, the objective
  (``obj_fn``) as extra arguments; plain transformations get neither."""
  extra = {"value": value}
  if obj_fn is not None:
    extra["obj_fn"] = obj_fn
  return optax.with_extra_args_support(opt).update(grads, state, params, **extra)


def apply_step(opt: optax.GradientTransformation, objective: Objective, params, opt_state):
  """One step of ``opt`` on ``objective``: ``-> (params, opt_state, loss)``, where
  ``loss = objective(params)`` before the update."""
  loss, grads = jax.value_and_grad(objective)(params)
  updates, opt_state = update(opt, grads, opt_state, params, loss, objective)
  return optax.apply_updates(params, updates), opt_state, loss


def task_step(task: Task, opt: optax.GradientTransformation, params, opt_state, data,
              batch_key: jax.Array, loss_key: jax.Array, model_state=None):
  """One step on the ``train`` batch drawn with ``batch_key``:
  ``-> (params, opt_state, loss)``, or ``(params, opt_state, loss, model_state)``
  for a task with model state (``task.stateful``; its ``loss_with_state`` in
  training mode updates the state)."""
  batch = task.batch(data, batch_key, "train")
  if not task.stateful:
    return apply_step(opt, lambda p: task.loss(p, batch, loss_key), params, opt_state)

  def objective(p):
    return task.loss_with_state(p, model_state, batch, loss_key, True)

  (loss, new_state), grads = jax.value_and_grad(objective, has_aux=True)(params)
  updates, opt_state = update(opt, grads, opt_state, params, loss,
                              lambda p: objective(p)[0])
  return optax.apply_updates(params, updates), opt_state, loss, new_state


def initial_carry(task: Task, opt: optax.GradientTransformation, params, key: jax.Array):
  """The carry of a run's steps: ``(params, opt_state)``, plus the model state
  (``task.init_state(key)``) for a stateful task."""
  if task.stateful:
    return (params, opt.init(params), task.init_state(key))
  return (params, opt.init(params))


def run_steps(task: Task, opt: optax.GradientTransformation, params, opt_state, data,
              step_keys: jax.Array, model_state=None):
  """``len(step_keys)`` steps in one ``lax.scan``; step ``i`` splits ``step_keys[i]``
  into its batch and loss keys. ``-> ((params, opt_state), losses (steps,))``; the
  carry also holds the model state of a stateful task."""

  def body(carry, key):
    k_batch, k_loss = jax.random.split(key)
    out = task_step(task, opt, carry[0], carry[1], data, k_batch, k_loss,
                    carry[2] if task.stateful else None)
    return (out[0], out[1]) + tuple(out[3:]), out[2]

  carry = (params, opt_state) + ((model_state,) if task.stateful else ())
  return jax.lax.scan(body, carry, step_keys)


#: Seed of the key of every evaluation that draws batches (tasks without
#: ``eval_batches``): validation is the same for every run, step and optimizer.
EVAL_SEED = 0


def eval_key() -> jax.Array:
  """The fixed key of evaluations that draw batches (``EVAL_SEED``)."""
  return jax.random.PRNGKey(EVAL_SEED)


def evaluate(task: Task, params, data, key: Optional[jax.Array] = None,
             split: str = "inner_valid", num_batches: int = 4,
             metric: Optional[Callable] = None, model_state=None) -> jax.Array:
  """Mean of ``metric`` (default ``task.loss``; e.g. ``task.error_rate``) over the
  evaluation set of ``split``.

  Deterministic: a task with ``eval_batches`` is evaluated on its whole evaluation
  set (the mean of the chunk means, equal chunks, so the mean over every example);
  any other task on ``num_batches`` batches drawn from ``key`` (default
  ``eval_key()``, the same for every caller), batch ``j`` from the ``j``-th of
  ``split(key, num_batches)``. A stateful task is evaluated in inference mode
  (``loss_with_state(..., training=False)``) with ``model_state``.
  """
  if task.stateful:
    if metric is None:
      metric = lambda p, b, k: task.loss_with_state(p, model_state, b, k, False)[0]
    else:
      base = metric
      metric = lambda p, b, k: base(p, b, k, model_state)
  metric = task.loss if metric is None else metric
  key = eval_key() if key is None else key
  if task.eval_batches is not None:
    k_loss = jax.random.fold_in(key, 1)
    return jnp.mean(jax.lax.map(lambda b: metric(params, b, k_loss),
                                task.eval_batches(data, split)))

  def one(k):
    k_batch, k_loss = jax.random.split(k)
    return metric(params, task.batch(data, k_batch, split), k_loss)

  return jnp.mean(jax.lax.map(one, jax.random.split(key, num_batches)))


def evaluate_error_rate(task: Task, params, data, key: Optional[jax.Array] = None,
                        split: str = "inner_valid", num_batches: int = 4,
                        model_state=None) -> jax.Array:
  """``evaluate`` of ``task.error_rate`` on the same examples as the loss; NaN for a
  task without one (not a classifier)."""
  error_rate = getattr(task, "error_rate", None)
  if error_rate is None:
    return jnp.float32(jnp.nan)
  return evaluate(task, params, data, key, split, num_batches, metric=error_rate,
                  model_state=model_state)


def eval_params(opt_state, params):
  """The parameters to evaluate: ``params``, or the iterate the optimizer exposes in
  its state (found anywhere in ``opt_state``): a schedule-free optimizer's averaged
  iterate, or the ``eval_params(params)`` of a state that defines it (a proximal
  rule's last proximal output)."""
  def exposes(s):
    return isinstance(s, contrib.ScheduleFreeState) or hasattr(s, "eval_params")

  found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=exposes) if exposes(s)]
  if len(found) != 1:
    return params
  if isinstance(found[0], contrib.ScheduleFreeState):
    return contrib.schedule_free_eval_params(found[0], params)
  return found[0].eval_params(params)


def run_periods(task: Task, opt: optax.GradientTransformation, params, opt_state, data,
                step_keys: jax.Array, eval_batches: int = 4, error_rate: bool = False,
                model_state=None):
  """Evaluation periods of a run, as one traceable function.

  Args:
    step_keys: (P, E, 2) keys: P periods of E steps. Evaluation does not depend on
      them (``evaluate``: every evaluation of every run sees the same examples).
    eval_batches: ``inner_valid`` batches per evaluation of a task without
      ``eval_batches`` (one with it is evaluated on its whole evaluation set).
    error_rate: also evaluate ``task.error_rate`` (``evaluate_error_rate``) on the
      same validation examples; ``valid_loss`` is then ``(P, 2)``: loss, error rate.
    model_state: a stateful task's model state (then the carry has three parts).

  Returns:
    ``((params, opt_state[, model_state]), (losses (P, E), valid_loss (P,) or (P, 2)))``.
  """
  def one_period(carry, keys):
    carry, losses = run_steps(task, opt, carry[0], carry[1], data, keys,
                              carry[2] if task.stateful else None)
    p, s = carry[0], carry[1]
    state = carry[2] if task.stateful else None
    at_params = eval_params(s, p)
    valid = evaluate(task, at_params, data, num_batches=eval_batches, model_state=state)
    if error_rate:
      err = evaluate_error_rate(task, at_params, data, num_batches=eval_batches,
                                model_state=state)
      valid = jnp.stack([valid, err.astype(valid.dtype)])
    return carry, (losses, valid)

  carry = (params, opt_state) + ((model_state,) if task.stateful else ())
  return jax.lax.scan(one_period, carry, step_keys)


def seed_keys(seed: int, steps: int) -> Tuple[jax.Array, jax.Array]:
  """``(init_key, step_keys (steps, 2))`` of a run with ``seed``. The seed's key is
  split in three: the third part, once the evaluation key, is unused (evaluation is
  deterministic) and stays in the split so that runs keep their numbers."""
  k_init, k_train, _ = jax.random.split(jax.random.PRNGKey(seed), 3)
  return k_init, jax.random.split(k_train, steps)


def eval_schedule(steps: int, eval_every: int) -> np.ndarray:
  """Steps after which a run is evaluated: every ``eval_every`` steps and at ``steps``."""
  if steps <= 0:
    raise ValueError(f"steps must be positive, got {steps}.")
  if eval_every <= 0:
    raise ValueError(f"eval_every must be positive, got {eval_every}.")
  points = list(range(eval_every, steps + 1, eval_every))
  if not points or points[-1] != steps:
    points.append(steps)
  return np.asarray(points)


OptimizerOrFactory = Any  # optax transformation, or ``param_info -> transformation``


def run(task: Task, opt: OptimizerOrFactory, seed, data, steps: int, eval_every: int,
        eval_batches: int = 4, error_rate: bool = False):
  """A whole run from initialization, as one traceable function (jit it, vmap it over
  seeds or over optimizers built from traced hyper-parameters).

  Args:
    task: the task.
    opt: an optax transformation, or a function ``param_info -> transformation`` (μP
      learned optimizers need the task's ``param_info`` of the initial parameters).
    seed: int or traced int32 (seed rule in the module docstring).
    data: the task's data (an argument, so that it is never a compile-time constant).
    steps, eval_every: budget and validation period (``eval_schedule``).
    eval_batches: ``inner_valid`` batches averaged per evaluation.
    error_rate: also measure the validation error rate (``run_periods``); the
      result then has a fourth element.

  Returns:
    ``((params, opt_state), train_loss (steps,), valid_loss (E,))`` with the
    evaluations at ``eval_schedule(steps, eval_every)`` (deterministic: ``evaluate``;
    a stateful task's carry also holds its model state); ``params`` are the last
    iterate (``eval_params`` gives the one to evaluate). With ``error_rate``:
    ``(..., valid_loss (E,), valid_error (E,))`` (NaN for a task without
    ``error_rate``).
  """
  k_init, step_keys = seed_keys(seed, steps)
  params = task.init(k_init)
  if not isinstance(opt, optax.GradientTransformation):
    opt = opt(task.param_info(params) if task.param_info is not None else None)
  carry = initial_carry(task, opt, params, k_init)
  full = steps // eval_every
  losses, valid = [], []

  def periods(carry, keys):
    return run_periods(task, opt, carry[0], carry[1], data, keys, eval_batches,
                       error_rate, carry[2] if task.stateful else None)

  if full:
    keys = step_keys[:full * eval_every].reshape((full, eval_every) + step_keys.shape[1:])
    carry, (chunk, v) = periods(carry, keys)
    losses.append(chunk.reshape(-1))
    valid.append(v)
  if steps % eval_every:
    carry, (chunk, v) = periods(carry, step_keys[None, full * eval_every:])
    losses.append(chunk.reshape(-1))
    valid.append(v)
  valid = jnp.concatenate(valid)
  if error_rate:
    return carry, jnp.concatenate(losses), valid[:, 0], valid[:, 1]
  return carry, jnp.concatenate(losses), valid


def tree_where(pred: jax.Array, on_true, on_false):
  """Leafwise ``jnp.where(pred, on_true, on_false)`` over two pytrees of one structure."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


@dataclasses.dataclass
class RunResult:
  """The record of one inner run.

  Attributes:
    train_loss: (steps,) float64 per-step training loss; NaN from the divergence on.
    eval_steps: (E,) steps after which the validation loss was measured.
    valid_loss: (E,) mean ``inner_valid`` loss at ``eval_steps``; NaN from the
      divergence on.
    wall_time: seconds spent training (compilation and evaluation excluded where the
      caller can separate them).
    diverged_at: the 0-based step where the run diverged (the first non-finite
      training loss or, under a blow-up rule, the first loss above the threshold),
      or None.
    params: final parameters (the evaluation iterate), when the caller keeps them.
    error: the message of an exception that stopped the run ("" when none).
    valid_error: (E,) validation error rate at ``eval_steps`` (classifiers, when
      measured), else None.
  """
  train_loss: np.ndarray
  eval_steps: np.ndarray
  valid_loss: np.ndarray
  wall_time: float = float("nan")
  diverged_at: Optional[int] = None
  params: Any = None
  error: str = ""
  valid_error: Optional[np.ndarray] = None

  @property
  def diverged(self) -> bool:
    return self.diverged_at is not None

  @property
  def status(self) -> str:
    """``ok``, ``diverged`` or ``error``."""
    if self.error:
      return "error"
    return "diverged" if self.diverged else "ok"

  @property
  def final_train_loss(self) -> float:
    return float(self.train_loss[-1])

  @property
  def final_valid_loss(self) -> float:
    return float(self.valid_loss[-1]) if len(self.valid_loss) else float("nan")

  @classmethod
  def failed(cls, error: str) -> "RunResult":
    """A run stopped by an exception: no curves."""
    return cls(None, None, None, error=error)


# The blow-up rule applied by ``metaopt train``: a finite training loss above
# ``DEFAULT_BLOWUP_FACTOR * max(|initial loss|, BLOWUP_FLOOR)`` is divergence too (a
# run that went from 2.3 to 5e5 has not trained). The floor keeps a near-zero initial
# loss from making every later fluctuation a "blow-up".
DEFAULT_BLOWUP_FACTOR = 1e3
BLOWUP_FLOOR = 1.0


def divergence_step(train_loss, blowup_factor: Optional[float] = None,
                    initial_loss: Optional[float] = None,
                    blowup_floor: float = BLOWUP_FLOOR) -> Optional[int]:
  """The 0-based step where a training curve diverged, or None.

  Args:
    train_loss: (steps,) training losses (``train_loss[0]`` is the loss at
      initialization unless ``initial_loss`` is given).
    blowup_factor: when given, a finite loss above
      ``blowup_factor * max(|initial_loss|, blowup_floor)`` is divergence too; None
      counts only non-finite losses.
    initial_loss: the loss at initialization (default ``train_loss[0]``); pass it when
      ``train_loss`` is a later chunk of the run.
    blowup_floor: lower bound of the reference loss (so that an initial loss near 0
      does not make an ordinary loss a blow-up).
  """
  curve = np.asarray(train_loss, np.float64)
  bad = ~np.isfinite(curve)
  if blowup_factor is not None and len(curve):
    if blowup_factor <= 1:
      raise ValueError(f"blowup_factor must be > 1, got {blowup_factor}.")
    ref = curve[0] if initial_loss is None else float(initial_loss)
    if np.isfinite(ref):
      limit = blowup_factor * max(abs(float(ref)), blowup_floor)
      with np.errstate(invalid="ignore"):
        bad |= curve > limit
  idx = np.flatnonzero(bad)
  return int(idx[0]) if len(idx) else None


def mark_divergence(train_loss, eval_steps, valid_loss, wall_time: float = float("nan"),
                    params: Any = None, blowup_factor: Optional[float] = None) -> RunResult:
  """The divergence rule of every run: from the step ``d`` where the run diverged
  (``divergence_step``: the first non-finite training loss, the loss of the
  parameters after ``d`` updates, or with ``blowup_factor`` also the first loss above
  ``blowup_factor`` times the initial one) the training curve is NaN, and so is every
  validation loss measured after ``>= d`` steps.

  ``train_loss`` may be shorter than the run (a run stopped at its divergence); it is
  padded with NaN to ``eval_steps[-1]`` steps. ``blowup_factor`` is None (non-finite
  losses only) for the leaderboard, so that stored results do not depend on it.
  """
  eval_steps = np.asarray(eval_steps)
  steps = int(eval_steps[-1]) if len(eval_steps) else len(train_loss)
  curve = np.full((steps,), np.nan)
  curve[:len(train_loss)] = np.asarray(train_loss, np.float64)
  valid = np.full((len(eval_steps),), np.nan)
  valid[:len(valid_loss)] = np.asarray(valid_loss, np.float64)
  diverged_at = divergence_step(curve, blowup_factor)
  if diverged_at is not None:
    curve[diverged_at:] = np.nan
    valid[eval_steps >= diverged_at] = np.nan
  return RunResult(curve, eval_steps, valid, wall_time, diverged_at, params)
