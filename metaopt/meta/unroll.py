"""Inner unrolls: in-flight inner training runs advanced by a learned optimizer.

Everything here is written for ONE task and vmapped over the batch of in-flight tasks
by the estimators. An inner run (``InnerState``) holds the task's parameters, the
learned optimizer's state, its step counter and horizon, and the dynamic part of its
task config (the static part, which decides shapes, is shared by every task of a
meta-training run). ``unroll`` advances it ``length`` steps in one ``lax.scan``
and restarts it (a new task config is sampled and the parameters are re-initialized)
when it reaches its horizon or its loss stops being finite.

The horizon contract (``metaopt.lopt.base``): every run's learned optimizer is
initialized with that run's own horizon, ``run_horizon``: the number of updates its
state will apply (the sampled horizon less the run's starting offset; unknown for
``never_ending`` runs), a traced int32, so runs of different lengths are one vmapped
program, and features of the horizon see during meta-training what they see at
evaluation, where ``num_steps`` is the run's step budget.

The task data is an explicit argument everywhere (shared by all tasks; never closed
over inside jit).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt import inner
from metaopt.lopt.base import UNKNOWN_HORIZON, LearnedOptimizer
from metaopt.meta.truncation import NEVER, TruncationSchedule
from tasks.base import TaskFamily

#: Meta-loss options: the mean normalized training loss over the truncation, the
#: normalized training loss of its last step, or the mean normalized loss on
#: ``outer_valid`` batches after each update (at the iterate the optimizer exposes:
#: ``inner.eval_params``).
META_LOSSES = ("train", "final", "valid")


@dataclasses.dataclass
class InnerState:
  """One in-flight inner run (leaves gain a leading task axis when batched).

  Attributes:
    params: the task's parameters.
    opt_state: the learned optimizer's state.
    step: int32, steps taken in this run (starts at a random offset for the first run).
    horizon: int32, the step at which the run restarts.
    dynamic: the dynamic part of the run's task config.
  """
  params: Any
  opt_state: Any
  step: jax.Array
  horizon: jax.Array
  dynamic: Any


jax.tree_util.register_dataclass(
    InnerState, data_fields=["params", "opt_state", "step", "horizon", "dynamic"],
    meta_fields=[])


class UnrollOut(NamedTuple):
  """Per-step outputs of ``unroll`` (shape ``(length,)`` each for one task).

  Attributes:
    meta_loss: normalized per-step meta-loss term (see ``META_LOSSES``).
    loss: raw training loss before the step's update.
    finite: False where the loss (or meta-loss) was NaN/inf (the run is then reset).
    reset: True where the run was restarted after this step.
  """
  meta_loss: jax.Array
  loss: jax.Array
  finite: jax.Array
  reset: jax.Array


@dataclasses.dataclass(frozen=True)
class InnerProblem:
  """What is meta-trained on: a family (with its static config), a learned
  optimizer, a truncation schedule and a meta-loss.

  Attributes:
    family: the task family.
    static: the static config shared by all tasks (sampled once per run).
    lopt: the learned optimizer (``transform(theta)`` gives the inner optimizer).
    schedule: truncation schedule (horizons and offsets).
    meta_loss: one of ``META_LOSSES``.
  """
  family: TaskFamily
  static: Any
  lopt: LearnedOptimizer
  schedule: TruncationSchedule
  meta_loss: str = "train"

  def __post_init__(self):
    if self.meta_loss not in META_LOSSES:
      raise ValueError(f"Unknown meta_loss {self.meta_loss!r}; known: {META_LOSSES}.")

  def task(self, dynamic):
    return self.family.make_task(self.static, dynamic)

  def optimizer(self, theta, task=None, params=None, num_steps=None
                ) -> optax.GradientTransformation:
    """The inner optimizer for theta; μP architectures get the task's ``param_info``.

    ``num_steps``: the run's horizon (``run_horizon``) where the state is initialized;
    updates read it from the state (``metaopt.lopt.base``)."""
    if task is not None and task.param_info is not None:
      return self.lopt.transform(theta, num_steps=num_steps,
                                 param_info=task.param_info(params))
    return self.lopt.transform(theta, num_steps=num_steps)

  def new_run(self, theta, key: jax.Array, offset: bool = False,
              horizon=None) -> InnerState:
    """A fresh inner run: new task config, fresh params, fresh optimizer state
    initialized with the run's horizon (``run_horizon``).

    ``horizon``: the run's length instead of one sampled from the schedule."""
    k_dyn, k_init, k_hor, k_off = jax.random.split(key, 4)
    dynamic = self.family.sample_dynamic(k_dyn, self.static)
    task = self.task(dynamic)
    params = task.init(k_init)
    horizon = (self.schedule.sample_horizon(k_hor) if horizon is None
               else jnp.asarray(horizon, jnp.int32))
    step = (self.schedule.initial_step(k_off, horizon) if offset
            else jnp.zeros((), jnp.int32))
    opt = self.optimizer(theta, task, params, num_steps=run_horizon(horizon, step))
    return InnerState(params, opt.init(params), step, horizon, dynamic)

  def init_states(self, theta, key: jax.Array, num_tasks: int) -> InnerState:
    """``num_tasks`` fresh runs (leading axis), started at random offsets."""
    keys = jax.random.split(key, num_tasks)
    return jax.vmap(lambda k: self.new_run(theta, k, offset=True))(keys)

  def weights(self, length: int) -> jax.Array:
    """(length,) weights turning the per-step meta-loss terms of a truncation of
    ``length`` steps into its meta-loss (a mean, or the last step for ``final``)."""
    if self.meta_loss == "final":
      return jnp.zeros((length,), jnp.float32).at[-1].set(1.0)
    return jnp.full((length,), 1.0 / length, jnp.float32)

  def step(self, theta, state: InnerState, data, key: jax.Array):
    """One inner step (no restart): ``-> (state, (meta_loss, loss, finite))``."""
    task = self.task(state.dynamic)
    # No num_steps here: the run's horizon is in its optimizer state (set by new_run).
    opt = self.optimizer(theta, task, state.params)
    k_batch, k_loss, k_valid, k_vloss = jax.random.split(key, 4)
    params, opt_state, loss = inner.task_step(task, opt, state.params, state.opt_state, data,
                                              k_batch, k_loss)
    if self.meta_loss == "valid":
      raw = task.loss(inner.eval_params(opt_state, params),
                      task.batch(data, k_valid, "outer_valid"), k_vloss)
    else:
      raw = loss
    finite = jnp.isfinite(loss) & jnp.isfinite(raw)
    meta_loss = task.normalize_loss(jnp.where(finite, raw, 0.0))
    new = InnerState(params, opt_state, state.step + 1, state.horizon, state.dynamic)
    return new, (meta_loss, loss, finite)

  def unroll(self, thetas, states: InnerState, data, key: jax.Array, length: int,
             next_thetas=None):
    """Advances a group of B runs of the same task ``length`` steps (one truncation).

    The group holds the branches of one task that differ only in theta (the two
    branches of an antithetic pair; B = 1 for plain unrolls): ``thetas`` and
    ``states`` have a leading axis B, all branches see the same batches (common
    random numbers) and restart together, when they reach the horizon or when any
    branch diverges (so a pair never desynchronizes). The replacement run is drawn
    from ``key``. Horizons are >= the truncation, so at most one scheduled restart
    happens per truncation. ``next_thetas`` (default ``thetas``): the thetas of the
    runs that start inside this unroll (an estimator that keeps one perturbation per
    run switches to the next run's here).

    Returns:
      ``(states, UnrollOut)`` with ``meta_loss, loss, finite`` of shape
      ``(length, B)`` and ``reset`` of shape ``(length,)``.
    """
    next_thetas = thetas if next_thetas is None else next_thetas
    fresh = jax.vmap(self.new_run, in_axes=(0, None))(next_thetas,
                                                      jax.random.fold_in(key, length))
    step = jax.vmap(self.step, in_axes=(0, 0, None, None))

    def body(carry, i):
      st, restarted = carry
      th = inner.tree_where(restarted, next_thetas, thetas)
      st, (meta_loss, loss, finite) = step(th, st, data, jax.random.fold_in(key, i))
      done = jnp.any(st.step >= st.horizon) | ~jnp.all(finite)
      return ((inner.tree_where(done, fresh, st), restarted | done),
              UnrollOut(meta_loss, loss, finite, done))

    (states, _), out = jax.lax.scan(body, (states, jnp.asarray(False)), jnp.arange(length))
    return states, out


def run_horizon(horizon: jax.Array, start: jax.Array) -> jax.Array:
  """The number of updates of a run that starts at step ``start`` and restarts at
  ``horizon`` (what its learned optimizer gets as ``num_steps``): ``horizon - start``,
  ``UNKNOWN_HORIZON`` for runs without an end (``truncation.NEVER``). Traceable."""
  horizon = jnp.asarray(horizon, jnp.int32)
  return jnp.where(horizon >= NEVER, UNKNOWN_HORIZON, jnp.maximum(horizon - start, 1))


def train_curve(family: TaskFamily, static, opt: inner.OptimizerOrFactory, dynamic, data,
                key: jax.Array, num_steps: int) -> Tuple[jax.Array, jax.Array]:
  """Trains one task from scratch with ``opt``: ``-> (training losses (num_steps,),
  validation loss at the end)`` (``inner.evaluate`` on ``inner_valid``, at the iterate
  the optimizer exposes).

  ``opt`` is an optax transformation or ``param_info -> transformation``. Vmappable
  over ``dynamic`` and ``key``; used to evaluate theta on held-out tasks against a
  hand-designed baseline inside one jitted call.
  """
  task = family.make_task(static, dynamic)
  k_init, k_steps = jax.random.split(key)
  params = task.init(k_init)
  if not isinstance(opt, optax.GradientTransformation):
    opt = opt(task.param_info(params) if task.param_info is not None else None)
  (params, opt_state), losses = inner.run_steps(task, opt, params, opt.init(params), data,
                                                jax.random.split(k_steps, num_steps))
  valid = inner.evaluate(task, inner.eval_params(opt_state, params), data)
  return losses, valid


def shared_data(family: TaskFamily, static, key: jax.Array):
  """The data pytree shared by every task of ``family`` with this static config."""
  return family.make_task(static, family.sample_dynamic(key, static)).data

