"""Meta-gradient estimators behind one interface.

An estimator owns the in-flight inner runs of a batch of ``num_tasks`` tasks (its
*worker state*; every leaf has the task axis first, so it shards over devices) and
turns one truncation of them into a meta-gradient estimate:

* ``init_worker_state(theta, key) -> worker_state``
* ``compute_gradient(theta, worker_state, data, key) -> (grad, worker_state, metrics)``

``grad`` has theta's structure, ``metrics`` is a dict of float32 scalars: means over
tasks (``meta_loss``, ``train_loss``, ``valid_fraction``) and counts
(``num_nan_resets``, ``num_restarts``, ``inner_steps``; the trainer sums counts over
its logging window and averages the rest). Both are pure and jittable; ``key``
carries all randomness of the truncation.

Estimators (registered in ``ESTIMATOR_CLASSES`` by ``name``; ``ESTIMATORS`` lists the
names; ``build_estimator(name, ...)`` builds one):

* ``tbptt``: truncated backprop through the truncation (biased over several
  truncations: gradients do not flow into the state the truncation starts from).
* ``es``: truncated antithetic ES; both branches start from the shared state and the
  positive branch's state is kept.
* ``full_es``: antithetic ES over a whole run from scratch (meta-loss ``avg``,
  ``min``, or ``last`` = loss of the final parameters recomputed on fresh batches).
* ``pes``: Persistent ES (Vicol et al., 2021): antithetic pairs that persist across
  truncations, with each pair's perturbations accumulated since its run started.
  Unbiased for the meta-gradient of the sum of truncation losses. When a run restarts
  inside a truncation the loss terms after the restart are weighted by the current
  perturbation only, and the accumulator restarts from it.
* ``nres``: Noise-reuse ES (Li et al., 2023): one perturbation per run, reused over
  all its truncations; the same target as PES with lower variance.
* ``MixedEstimator``: a weighted sum of estimators, each with its own worker state.

Divergence: a task whose loss becomes non-finite in any branch is excluded from the
estimate (zero weight), restarted, and counted in ``num_nan_resets``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import jax
import jax.numpy as jnp

from metaopt.meta.unroll import InnerProblem, InnerState
from tasks.registry import Registry, unknown_name_message

FULL_ES_LOSSES = ("avg", "min", "last")

Metrics = Dict[str, jax.Array]
tmap = jax.tree_util.tree_map


def _masked_mean(per_task, valid: jax.Array):
  """Mean over the task axis of a pytree, with invalid tasks given zero weight; NaN
  when no task is valid (there is no estimate: the trainer skips the update)."""
  count = jnp.sum(valid)
  scale = jnp.where(count > 0, 1.0 / jnp.maximum(count, 1), jnp.nan)

  def mean(x):
    mask = valid.reshape(valid.shape + (1,) * (x.ndim - 1))
    return jnp.sum(jnp.where(mask, x, 0.0), axis=0) * scale

  return tmap(mean, per_task)


def _sample_eps(theta, key: jax.Array, num_tasks: int, sigma: float):
  """Gaussian perturbations (std ``sigma``) of theta, one per task (leading axis)."""
  leaves, treedef = jax.tree_util.tree_flatten(theta)
  keys = jax.random.split(key, len(leaves))
  eps = [sigma * jax.random.normal(k, (num_tasks,) + jnp.shape(x), jnp.result_type(x))
         for k, x in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, eps)


def _pair_thetas(theta, eps):
  """``(T, 2, ...)`` thetas ``theta + eps`` and ``theta - eps`` per task."""
  return tmap(lambda t, e: t + jnp.stack([e, -e], axis=1), theta, eps)


def _group(states: InnerState, size: int) -> InnerState:
  """Repeats per-task states ``(T, ...)`` into groups ``(T, size, ...)``."""
  return tmap(lambda x: jnp.repeat(x[:, None], size, axis=1), states)


def _common_metrics(out, valid, weights, num_branches: int) -> Metrics:
  """Metrics shared by all estimators, from batched ``UnrollOut`` (T, K, B)."""
  num_tasks, length = out.reset.shape
  per_task = jnp.einsum("tkb,k->t", out.meta_loss, weights) / num_branches
  return {
      "meta_loss": _masked_mean(per_task, valid),
      "train_loss": (jnp.sum(jnp.where(out.finite, out.loss, 0.0))
                     / jnp.maximum(jnp.sum(out.finite), 1)),
      "num_nan_resets": jnp.sum(~jnp.all(out.finite, axis=2)).astype(jnp.float32),
      "num_restarts": jnp.sum(out.reset).astype(jnp.float32),
      "valid_fraction": jnp.mean(valid.astype(jnp.float32)),
      "inner_steps": jnp.asarray(num_tasks * length * num_branches, jnp.float32),
  }


#: Gradient-estimator classes by ``name`` (``MixedEstimator`` combines them; not listed).
ESTIMATOR_CLASSES: Registry[Type["GradientEstimator"]] = Registry("gradient estimator")


def register(cls: Type["GradientEstimator"]) -> Type["GradientEstimator"]:
  """Class decorator: registers an estimator class under ``cls.name``."""
  return ESTIMATOR_CLASSES.register(cls.name, cls)


class GradientEstimator(abc.ABC):
  """Interface of meta-gradient estimators (see module docstring)."""

  name: str = ""

  def __init__(self, problem: InnerProblem, num_tasks: int):
    if num_tasks < 1:
      raise ValueError(f"num_tasks must be >= 1, got {num_tasks}.")
    self.problem = problem
    self.num_tasks = num_tasks

  @abc.abstractmethod
  def init_worker_state(self, theta, key: jax.Array) -> Any:
    """In-flight inner runs (every leaf has a leading ``num_tasks`` axis)."""

  @abc.abstractmethod
  def compute_gradient(self, theta, worker_state, data, key: jax.Array
                       ) -> Tuple[Any, Any, Metrics]:
    """One truncation: ``(grad, new_worker_state, metrics)``."""

  @classmethod
  def from_options(cls, problem: InnerProblem, num_tasks: int, *, sigma: float,
                   full_es_loss: str) -> "GradientEstimator":
    """Builds the estimator from the meta-training options; each subclass takes
    the ones it uses (this default: none beyond ``problem`` and ``num_tasks``)."""
    del sigma, full_es_loss
    return cls(problem, num_tasks)

  def _unroll(self, thetas, states, data, key, length):
    """Unrolls all tasks: thetas/states ``(T, B, ...)``; keys shared within a task."""
    keys = jax.random.split(key, self.num_tasks)
    fn = lambda th, st, k: self.problem.unroll(th, st, data, k, length)  # noqa: E731
    states, out = jax.vmap(fn)(thetas, states, keys)
    return states, out


@register
class TruncatedBackprop(GradientEstimator):
  """Truncated backpropagation through time (exact for the truncation's loss as a
  function of theta from a fixed start state)."""

  name = "tbptt"

  def __init__(self, problem: InnerProblem, num_tasks: int):
    super().__init__(problem, num_tasks)
    self.length = problem.schedule.truncation_length

  def init_worker_state(self, theta, key):
    return _group(self.problem.init_states(theta, key, self.num_tasks), 1)

  def compute_gradient(self, theta, worker_state, data, key):
    weights = self.problem.weights(self.length)
    keys = jax.random.split(key, self.num_tasks)

    def task_loss(th, st, k):
      thetas = tmap(lambda x: x[None], th)
      st, out = self.problem.unroll(thetas, st, data, k, self.length)
      return jnp.dot(weights, out.meta_loss[:, 0]), (st, out)

    grad_fn = jax.vmap(jax.grad(task_loss, has_aux=True), in_axes=(None, 0, 0))
    per_task, (states, out) = grad_fn(theta, worker_state, keys)
    valid = jnp.all(out.finite, axis=(1, 2))
    metrics = _common_metrics(out, valid, weights, 1)
    return _masked_mean(per_task, valid), states, metrics


class _TruncatedAntithetic(GradientEstimator):
  """Base of the ES estimators over one truncation: perturbation std ``sigma``."""

  def __init__(self, problem: InnerProblem, num_tasks: int, sigma: float = 0.01):
    super().__init__(problem, num_tasks)
    self.sigma = float(sigma)
    self.length = problem.schedule.truncation_length

  @classmethod
  def from_options(cls, problem, num_tasks, *, sigma, full_es_loss):
    del full_es_loss
    return cls(problem, num_tasks, sigma)


@register
class TruncatedES(_TruncatedAntithetic):
  """Antithetic ES over one truncation from the shared state."""

  name = "es"

  def init_worker_state(self, theta, key):
    return self.problem.init_states(theta, key, self.num_tasks)

  def compute_gradient(self, theta, worker_state, data, key):
    k_eps, k_unroll = jax.random.split(key)
    eps = _sample_eps(theta, k_eps, self.num_tasks, self.sigma)
    states, out = self._unroll(_pair_thetas(theta, eps), _group(worker_state, 2), data,
                               k_unroll, self.length)
    weights = self.problem.weights(self.length)
    losses = jnp.einsum("tkb,k->tb", out.meta_loss, weights)
    coef = (losses[:, 0] - losses[:, 1]) / (2 * self.sigma**2)
    valid = jnp.all(out.finite, axis=(1, 2))
    grad = _masked_mean(tmap(lambda e: e * coef.reshape((-1,) + (1,) * (e.ndim - 1)), eps),
                        valid)
    return grad, tmap(lambda x: x[:, 0], states), _common_metrics(out, valid, weights, 2)


@dataclasses.dataclass
class PESState:
  """Worker state of PES.

  Attributes:
    states: antithetic pairs of inner runs, leaves ``(T, 2, ...)``.
    accum: per-task sum of the perturbations applied since the run started
      (theta's structure with a leading ``T`` axis).
  """
  states: InnerState
  accum: Any


jax.tree_util.register_dataclass(PESState, data_fields=["states", "accum"], meta_fields=[])


@register
class PES(_TruncatedAntithetic):
  """Persistent evolution strategies with antithetic pairs."""

  name = "pes"

  def init_worker_state(self, theta, key):
    states = _group(self.problem.init_states(theta, key, self.num_tasks), 2)
    accum = tmap(lambda x: jnp.zeros((self.num_tasks,) + jnp.shape(x), jnp.result_type(x)),
                 theta)
    return PESState(states, accum)

  def compute_gradient(self, theta, worker_state, data, key):
    k_eps, k_unroll = jax.random.split(key)
    eps = _sample_eps(theta, k_eps, self.num_tasks, self.sigma)
    states, out = self._unroll(_pair_thetas(theta, eps), worker_state.states, data,
                               k_unroll, self.length)
    weights = self.problem.weights(self.length)
    # Steps up to and including a restart belong to the old run (perturbed by the
    # accumulated eps); later steps to the new run (perturbed by this eps only).
    resets = out.reset.astype(jnp.int32)
    before = (jnp.cumsum(resets, axis=1) - resets) == 0  # (T, K)
    diff = (out.meta_loss[..., 0] - out.meta_loss[..., 1]) * weights / (2 * self.sigma**2)
    c_old = jnp.sum(jnp.where(before, diff, 0.0), axis=1)
    c_new = jnp.sum(jnp.where(before, 0.0, diff), axis=1)
    total = tmap(lambda a, e: a + e, worker_state.accum, eps)

    def per_task(tot, e):
      shape = (-1,) + (1,) * (e.ndim - 1)
      return tot * c_old.reshape(shape) + e * c_new.reshape(shape)

    valid = jnp.all(out.finite, axis=(1, 2))
    grad = _masked_mean(tmap(per_task, total, eps), valid)
    restarted = jnp.any(out.reset, axis=1)

    def new_accum(tot, e):
      return jnp.where(restarted.reshape((-1,) + (1,) * (e.ndim - 1)), e, tot)

    accum = tmap(new_accum, total, eps)
    return grad, PESState(states, accum), _common_metrics(out, valid, weights, 2)


@dataclasses.dataclass
class NRESState:
  """Worker state of NRES.

  Attributes:
    states: antithetic pairs of inner runs, leaves ``(T, 2, ...)``.
    eps: each task's perturbation, fixed for the whole of its current run (theta's
      structure with a leading ``T`` axis).
  """
  states: InnerState
  eps: Any


jax.tree_util.register_dataclass(NRESState, data_fields=["states", "eps"], meta_fields=[])


@register
class NRES(_TruncatedAntithetic):
  """Noise-reuse evolution strategies (Li et al., NeurIPS 2023).

  Each in-flight run draws one perturbation ``eps`` when it starts and keeps it for
  all its truncations; a truncation's estimate is antithetic ES on that truncation's
  loss terms, whose trajectories were shaped by ``theta +- eps`` since the run began:

      g = sum_k w_k (L_k(theta + eps) - L_k(theta - eps)) eps / (2 sigma^2).

  Unbiased for the same target as PES (the gradient of the Gaussian-smoothed sum of
  truncation losses), without PES's growing sum of perturbations, which is where its
  lower variance comes from. A run that restarts inside a truncation switches to its
  successor's perturbation at the restart (``InnerProblem.unroll``'s
  ``next_thetas``), so no run ever sees two perturbations.
  """

  name = "nres"

  def init_worker_state(self, theta, key):
    k_states, k_eps = jax.random.split(key)
    states = _group(self.problem.init_states(theta, k_states, self.num_tasks), 2)
    return NRESState(states, _sample_eps(theta, k_eps, self.num_tasks, self.sigma))

  def compute_gradient(self, theta, worker_state, data, key):
    k_eps, k_unroll = jax.random.split(key)
    eps_next = _sample_eps(theta, k_eps, self.num_tasks, self.sigma)
    keys = jax.random.split(k_unroll, self.num_tasks)
    unroll = lambda th, nth, st, k: self.problem.unroll(  # noqa: E731
        th, st, data, k, self.length, next_thetas=nth)
    states, out = jax.vmap(unroll)(_pair_thetas(theta, worker_state.eps),
                                   _pair_thetas(theta, eps_next), worker_state.states, keys)
    weights = self.problem.weights(self.length)
    # Steps up to and including the first restart belong to the current run (its
    # eps); later steps to runs started in this truncation (eps_next).
    resets = out.reset.astype(jnp.int32)
    before = (jnp.cumsum(resets, axis=1) - resets) == 0  # (T, K)
    diff = (out.meta_loss[..., 0] - out.meta_loss[..., 1]) * weights / (2 * self.sigma**2)
    c_cur = jnp.sum(jnp.where(before, diff, 0.0), axis=1)
    c_next = jnp.sum(jnp.where(before, 0.0, diff), axis=1)

    def per_task(e, e_next):
      shape = (-1,) + (1,) * (e.ndim - 1)
      return e * c_cur.reshape(shape) + e_next * c_next.reshape(shape)

    valid = jnp.all(out.finite, axis=(1, 2))
    grad = _masked_mean(tmap(per_task, worker_state.eps, eps_next), valid)
    restarted = jnp.any(out.reset, axis=1)
    eps = tmap(lambda e, n: jnp.where(restarted.reshape((-1,) + (1,) * (e.ndim - 1)), n, e),
               worker_state.eps, eps_next)
    return grad, NRESState(states, eps), _common_metrics(out, valid, weights, 2)


@register
class FullES(GradientEstimator):
  """Antithetic ES over whole inner runs from scratch (no persistent state)."""

  name = "full_es"

  def __init__(self, problem: InnerProblem, num_tasks: int, sigma: float = 0.01,
               loss_type: str = "avg", last_batches: int = 4):
    super().__init__(problem, num_tasks)
    if loss_type not in FULL_ES_LOSSES:
      raise ValueError(unknown_name_message("full-ES loss", loss_type, FULL_ES_LOSSES))
    self.sigma = float(sigma)
    self.loss_type = loss_type
    self.last_batches = last_batches
    self.length = problem.schedule.horizon

  @classmethod
  def from_options(cls, problem, num_tasks, *, sigma, full_es_loss):
    return cls(problem, num_tasks, sigma, full_es_loss)

  def init_worker_state(self, theta, key):
    return ()

  def _last_loss(self, state: InnerState, data, key):
    """Normalized loss of the final params on fresh batches (one branch)."""
    task = self.problem.task(state.dynamic)
    split = "outer_valid" if self.problem.meta_loss == "valid" else "train"

    def one(k):
      kb, kl = jax.random.split(k)
      return task.loss(state.params, task.batch(data, kb, split), kl)

    losses = jax.vmap(one)(jax.random.split(key, self.last_batches))
    return task.normalize_loss(jnp.mean(losses)), jnp.all(jnp.isfinite(losses))

  def compute_gradient(self, theta, worker_state, data, key):
    k_eps, k_tasks, k_unroll, k_last = jax.random.split(key, 4)
    eps = _sample_eps(theta, k_eps, self.num_tasks, self.sigma)
    thetas = _pair_thetas(theta, eps)
    # Every full run lasts self.length updates (its learned optimizer's horizon) and
    # is never restarted by the schedule: the last step's params are kept.
    new_run = lambda th, k: self.problem.new_run(th, k, horizon=self.length)  # noqa: E731
    runs = jax.vmap(jax.vmap(new_run, in_axes=(0, None)))(
        thetas, jax.random.split(k_tasks, self.num_tasks))
    runs = dataclasses.replace(runs, horizon=jnp.full_like(runs.horizon, 2**30))
    states, out = self._unroll(thetas, runs, data, k_unroll, self.length)
    valid = jnp.all(out.finite, axis=(1, 2))
    if self.loss_type == "avg":
      losses = jnp.mean(out.meta_loss, axis=1)
    elif self.loss_type == "min":
      losses = jnp.min(out.meta_loss, axis=1)
    else:
      last = jax.vmap(jax.vmap(self._last_loss, in_axes=(0, None, None)), in_axes=(0, None, 0))
      losses, ok = last(states, data, jax.random.split(k_last, self.num_tasks))
      valid = valid & jnp.all(ok, axis=1)
    coef = (losses[:, 0] - losses[:, 1]) / (2 * self.sigma**2)
    grad = _masked_mean(tmap(lambda e: e * coef.reshape((-1,) + (1,) * (e.ndim - 1)), eps),
                        valid)
    metrics = _common_metrics(out, valid, jnp.full((self.length,), 1.0 / self.length), 2)
    metrics["meta_loss"] = _masked_mean(jnp.mean(losses, axis=1), valid)
    return grad, worker_state, metrics


class MixedEstimator(GradientEstimator):
  """Weighted average of estimators: ``sum_i w_i * grad_i / sum_i w_i``; the worker
  state is a tuple.

  Weights are normalized by their sum, for the gradient and the ``meta_loss`` alike,
  so ``(1, 3)`` means ``(0.25, 0.75)``. Metrics are summed counts
  (``num_nan_resets``, ``inner_steps``...) and the weight-averaged ``meta_loss``,
  plus every estimator's own metrics as ``label/key`` (``labels``: the estimators'
  names by default).

  With ``split_data`` the members are estimators of different problems (a mixture of
  task families): ``data`` is then a tuple with one member's data per estimator.
  """

  name = "mix"

  def __init__(self, estimators: Sequence[GradientEstimator], weights: Sequence[float],
               split_data: bool = False, labels: Optional[Sequence[str]] = None):
    if len(estimators) != len(weights) or not estimators:
      raise ValueError("MixedEstimator needs one weight per estimator (and at least one).")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
      raise ValueError(f"MixedEstimator weights must be >= 0 with a positive sum, got "
                       f"{list(weights)}.")
    super().__init__(estimators[0].problem, estimators[0].num_tasks)
    self.estimators = tuple(estimators)
    total = float(sum(weights))
    #: Normalized weights (summing to 1).
    self.mix_weights = tuple(float(w) / total for w in weights)
    self.split_data = split_data
    self.labels = tuple(labels) if labels is not None else tuple(e.name for e in estimators)
    if len(set(self.labels)) != len(self.labels):
      raise ValueError(f"MixedEstimator labels must be distinct, got {self.labels}.")

  def init_worker_state(self, theta, key):
    keys = jax.random.split(key, len(self.estimators))
    return tuple(e.init_worker_state(theta, k) for e, k in zip(self.estimators, keys))

  def compute_gradient(self, theta, worker_state, data, key):
    keys = jax.random.split(key, len(self.estimators))
    grad = tmap(jnp.zeros_like, theta)
    states, metrics = [], {}
    datas = data if self.split_data else (data,) * len(self.estimators)
    for est, label, w, ws, d, k in zip(self.estimators, self.labels, self.mix_weights,
                                       worker_state, datas, keys):
      g, ws, m = est.compute_gradient(theta, ws, d, k)
      grad = tmap(lambda a, b, w=w: a + w * b, grad, g)
      states.append(ws)
      for name, value in m.items():
        metrics[f"{label}/{name}"] = value
        if name == "meta_loss" or (self.split_data and name == "valid_fraction"):
          metrics[name] = metrics.get(name, 0.0) + w * value
        elif name != "valid_fraction" and name != "train_loss":
          metrics[name] = metrics.get(name, 0.0) + value
    return grad, tuple(states), metrics


#: Names ``build_estimator`` accepts.
ESTIMATORS = tuple(ESTIMATOR_CLASSES.names())


def build_estimator(name: str, problem: InnerProblem, num_tasks: int, sigma: float = 0.01,
                    full_es_loss: str = "avg") -> GradientEstimator:
  """The estimator ``name`` (one of ``ESTIMATORS``); unknown names raise
  ``tasks.UnknownNameError`` (a ``ValueError``) listing the known ones."""
  return ESTIMATOR_CLASSES.get(name).from_options(problem, num_tasks, sigma=sigma,
                                                  full_es_loss=full_es_loss)
