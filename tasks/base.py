"""Core task types: Task, TaskFamily, ParamInfo.

A Task is a bundle of pure functions over pytrees:

* ``init(key) -> params``
* ``loss(params, batch, key) -> scalar``
* ``batch(data, key, split) -> batch`` samples one mini-batch *inside* jit from the
  task's in-memory ``data`` pytree (or generates it), so a whole inner unroll lives in
  one ``lax.scan``. ``data`` is an explicit argument, never a closure: XLA would
  otherwise embed the whole dataset as a constant in every compiled program.
* ``error_rate(params, batch, key) -> scalar`` (classification tasks only): the
  mean classification error in [0, 1] on a batch of the ``loss``'s format, for
  error-rate targets (AlgoPerf); ``None`` for tasks without classes.
* ``normalize_loss(loss) -> loss`` maps the raw loss to a comparable range (roughly
  [0, 1] at initialisation for classification) with NaN / divergence clipped, so
  losses of different tasks can be averaged during meta-training.
* ``eval_batches(data, split) -> batches`` (optional): the *whole* evaluation set of
  ``split`` in a fixed order, stacked in chunks (leading axis = chunk), so validation
  is deterministic: the same examples for every run, evaluation and optimizer.
* ``init_state(key) -> state`` and ``loss_with_state(params, state, batch, key,
  training) -> (loss, state)`` (optional, as learned_optimization's
  ``loss_with_state``): model state that is not optimized, e.g. BatchNorm running
  statistics, updated by training steps and read (``training=False``) by evaluation.

A TaskFamily samples task configurations.  A configuration has a *static* part
(hashable Python values that decide shapes: width, depth, dimension) and a
*dynamic* part (a pytree of arrays: data seed, condition number, init scale...).
Tasks sampled together with ``sample_batch`` share the static part and stack the
dynamic part, so one inner step vmaps over them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

PRNGKey = jax.Array
Params = Any
Batch = Any

SPLITS = ("train", "inner_valid", "outer_valid", "test")

#: The vocabulary of ``metadata["architecture"]`` (reports group tasks by it):
#: ``linear`` is logistic regression, ``classic_function`` the closed-form test
#: functions (Rosenbrock...), ``sparse_problem`` LASSO / L1-regularised problems,
#: ``problem`` the other composite problem families of ``tasks.problems``.
ARCHITECTURES = ("mlp", "conv", "transformer", "linear", "quadratic", "classic_function",
                 "sparse_problem", "problem", "autoencoder")

#: ``metadata["dataset"]`` of tasks whose data is generated (no ``tasks.datasets`` name).
SYNTHETIC = "synthetic"

#: The roles a parameter tensor plays in the task-to-optimizer contract (μP).
ROLES = ("input", "hidden", "output", "bias", "scalar")


@dataclasses.dataclass(frozen=True)
class ParamInfo:
  """What the optimizer needs to know about one parameter tensor (μP contract).

  Attributes:
    role: one of ``ROLES``. ``input``: first layer (maps data to hidden, fan-in fixed
      by the data); ``hidden``: hidden-to-hidden matrix (fan-in grows with width);
      ``output``: readout (fan-out fixed by the labels); ``bias``: vector bias or
      norm gain; ``scalar``: anything else (left unscaled).
    fan_in: number of inputs feeding one output unit (1 for biases).
    fan_out: number of output units.
  """
  role: str
  fan_in: int = 1
  fan_out: int = 1

  def __post_init__(self):
    if self.role not in ROLES:
      raise ValueError(f"ParamInfo.role={self.role!r} is not one of {ROLES}.")


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")


@dataclasses.dataclass(frozen=True)
class Task:
  """A single optimization problem.

  Attributes:
    name: registry name (stable, versioned once a result points at it).
    init: ``key -> params`` pytree.
    loss: ``(params, batch, key) -> scalar`` float32 loss.
    data: pytree of arrays holding every split (``{}`` for data-free tasks). Passed
      to ``batch`` as an argument; shared by all tasks of a family.
    batch: ``(data, key, split) -> batch`` pytree; pure and jittable (``split`` is a
      static Python string from ``SPLITS``).
    abstract_batch: pytree of ``jax.ShapeDtypeStruct`` with the batch shapes.
    normalize_loss: ``loss -> loss``; comparable across tasks, finite (NaN and
      divergence are clipped to ``max_normalized_loss``).
    param_info: optional ``params -> pytree of ParamInfo`` (same structure as the
      params), the explicit μP contract. ``None`` means "unknown": μP optimizers
      then refuse the task with a clear error.
    metadata: description for reports and the leaderboard: every registered task has
      ``"dataset"`` (a ``tasks.datasets`` name or ``"synthetic"``) and
      ``"architecture"`` (one of ``ARCHITECTURES``); members of a family also
      ``"family"``.
    error_rate: optional ``(params, batch, key) -> scalar``, the mean classification
      error in [0, 1] of ``params`` on ``batch`` (same batch format as ``loss``);
      ``None`` for tasks that are not classifiers (quadratics, regression...).
    eval_batches: optional ``(data, split) -> batches``: every example of the
      split's evaluation set, in a fixed order, as ``K`` equal chunks stacked on a
      leading axis (each chunk in ``batch``'s format, so ``loss`` applies to it). The
      mean of the chunk losses is the loss on the whole set. ``None``: evaluation
      draws batches with a fixed key (data-free tasks).
    init_state: optional ``key -> model state`` (a pytree that is not optimized).
    loss_with_state: optional ``(params, state, batch, key, training) -> (loss,
      new_state)``; required with ``init_state``. ``loss`` of a stateful task is its
      training-mode loss from the initial state (what state-unaware code sees).
  """
  name: str
  init: Callable[[PRNGKey], Params]
  loss: Callable[[Params, Batch, PRNGKey], jax.Array]
  data: Any
  batch: Callable[[Any, PRNGKey, str], Batch]
  abstract_batch: Any
  normalize_loss: Callable[[jax.Array], jax.Array]
  param_info: Optional[Callable[[Params], Any]] = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  error_rate: Optional[Callable[[Params, Batch, PRNGKey], jax.Array]] = None
  eval_batches: Optional[Callable[[Any, str], Batch]] = None
  init_state: Optional[Callable[[PRNGKey], Any]] = None
  loss_with_state: Optional[Callable[..., Tuple[jax.Array, Any]]] = None

  def __post_init__(self):
    if (self.init_state is None) != (self.loss_with_state is None):
      raise ValueError(f"Task {self.name!r}: init_state and loss_with_state go together "
                       "(a stateful task needs both).")

  def __repr__(self) -> str:
    # The dataclass repr would print every array of ``data``.
    try:
      n = f"{num_params(abstract_params(self)):,}"
    except Exception:  # pylint: disable=broad-except
      n = "?"  # A repr must never raise.
    return (f"Task(name={self.name!r}, params={n}, "
            f"dataset={self.metadata.get('dataset')!r}, "
            f"architecture={self.metadata.get('architecture')!r}"
            f"{', stateful' if self.stateful else ''})")

  @property
  def stateful(self) -> bool:
    """True when the task carries model state (``init_state``)."""
    return self.init_state is not None

  def batches(self, split: str, seed: int = 0) -> Iterator[Batch]:
    """Python iterator of batches of ``split``, deterministic per ``seed``."""
    _check_split(split)
    sample = jax.jit(self.batch, static_argnums=2)
    key = jax.random.PRNGKey(seed)
    while True:
      key, sub = jax.random.split(key)
      yield sample(self.data, sub, split)

  def sample_batch(self, key: PRNGKey, split: str = "train") -> Batch:
    """One batch of ``split`` (eager convenience; inside jit call ``batch``)."""
    _check_split(split)
    return jax.jit(self.batch, static_argnums=2)(self.data, key, split)

  def value_and_grad(self, params, batch, key):
    return jax.value_and_grad(self.loss)(params, batch, key)


def make_normalizer(init_loss: float, max_normalized_loss: float = 1.5) -> Callable:
  """Loss normalizer: ``loss / init_loss`` clipped to ``[0?, max]``; NaN -> max.

  ``init_loss`` is the typical loss at initialisation (e.g. ``log(num_classes)``),
  so a normalized loss of 1 means "no progress" and divergence saturates at
  ``max_normalized_loss`` (learned_optimization clips at 1.5 log(num_classes)).
  """
  init_loss = float(init_loss)

  def normalize(loss):
    loss = jnp.asarray(loss, jnp.float32) / init_loss
    loss = jnp.where(jnp.isfinite(loss), loss, max_normalized_loss)
    return jnp.minimum(loss, max_normalized_loss)

  return normalize


def log_normalizer(reference: float, max_normalized_loss: float = 1.5) -> Callable:
  """Normalizer for losses that span orders of magnitude (quadratics, Rosenbrock).

  ``log10(1 + loss / reference) / log10(1 + 1)``: 1 at ``loss == reference``, 0 at
  the optimum, clipped at ``max_normalized_loss`` with NaN mapped to the max.
  """
  reference = float(reference)

  def normalize(loss):
    loss = jnp.asarray(loss, jnp.float32)
    val = jnp.log1p(jnp.maximum(loss, 0.0) / reference) / jnp.log(2.0)
    val = jnp.where(jnp.isfinite(val), val, max_normalized_loss)
    return jnp.minimum(val, max_normalized_loss)

  return normalize


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """A sampled task configuration.

  Attributes:
    static: hashable Python value deciding shapes (shared by a vmapped batch).
    dynamic: pytree of arrays (leading batch axis when from ``sample_batch``).
  """
  static: Any
  dynamic: Any


jax.tree_util.register_dataclass(TaskConfig, data_fields=["dynamic"], meta_fields=["static"])


@dataclasses.dataclass(frozen=True)
class TaskFamily:
  """A distribution over tasks.

  Attributes:
    name: registry name.
    sample_static: ``key -> static`` hashable config (shapes); may be constant.
    sample_dynamic: ``(key, static) -> dynamic`` pytree of arrays.
    make_task: ``(static, dynamic) -> Task``; must be traceable in ``dynamic`` so a
      batch of tasks vmaps (``dynamic`` may be a tracer).
  """
  name: str
  sample_static: Callable[[PRNGKey], Any]
  sample_dynamic: Callable[[PRNGKey, Any], Any]
  make_task: Callable[[Any, Any], Task]
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def sample(self, key: PRNGKey) -> TaskConfig:
    k1, k2 = jax.random.split(key)
    static = self.sample_static(k1)
    return TaskConfig(static, self.sample_dynamic(k2, static))

  def sample_batch(self, key: PRNGKey, num_tasks: int) -> TaskConfig:
    """``num_tasks`` configs sharing one static part; dynamic leaves stacked."""
    k1, k2 = jax.random.split(key)
    static = self.sample_static(k1)
    keys = jax.random.split(k2, num_tasks)
    dynamic = jax.vmap(lambda k: self.sample_dynamic(k, static))(keys)
    return TaskConfig(static, dynamic)

  def task(self, config: TaskConfig) -> Task:
    return self.make_task(config.static, config.dynamic)


def fixed_family(task: Task) -> TaskFamily:
  """A family with one member: lets any Task go where a TaskFamily is expected."""
  return TaskFamily(
      name=task.name,
      sample_static=lambda key: None,
      sample_dynamic=lambda key, static: jnp.zeros((), jnp.float32),
      make_task=lambda static, dynamic: task,
      metadata=dict(task.metadata),
  )


def abstract_params(task: Task):
  """ShapeDtypeStruct pytree of ``task.init`` without allocating."""
  return jax.eval_shape(task.init, jax.random.PRNGKey(0))


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
