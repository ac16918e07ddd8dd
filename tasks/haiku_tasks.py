"""Tasks from haiku models: ``from_haiku`` (a Task) and ``from_haiku_family`` (a family).

A user's model, written with haiku as usual, becomes a ``Task`` that every part of
metaopt accepts (training, tuning, the leaderboard, meta-training)::

    def forward(batch):
      x = batch["image"].reshape(batch["image"].shape[0], -1) / 255.0
      return hk.nets.MLP([64, 10])(x)

    def loss_fn(logits, batch):
      return tasks.common.softmax_cross_entropy(logits, batch["label"])

    task = tasks.from_haiku("my_mlp", forward, loss_fn, data, batch_size=128)

``forward`` takes the batch (a dict of arrays: the fields of the dataset, rows drawn
uniformly with replacement, as every built-in task draws them) and returns what
``loss_fn(outputs, batch)`` turns into a scalar. ``data`` is ``{split: {field:
array}}`` over the four ``SPLITS`` (or a dataset name from ``tasks.datasets``).
Functions using haiku's random numbers (dropout) get the loss key as their ``rng``.

Built-in tasks (``tasks.mlp``, ``tasks.conv``...) are written by hand in plain jax, not
for speed: ``benchmarks/haiku_task_step.py`` measures the same step time for the two
forms (see benchmarks/RESULTS.md), but the hand-written ones state their μP contract
(``param_info``), init scale and seeds explicitly, which families sample.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import SPLITS, ParamInfo, Task, TaskFamily, make_normalizer
from tasks.common import (classification_normalizer, load_dataset, num_classes,
                          random_seed, sample_rows, seed_key)

LossFn = Callable[[Any, Mapping[str, jax.Array]], jax.Array]
#: An ``hk.Transformed`` or a function of the batch (haiku is imported on use, so
#: ``import tasks`` and ``metaopt.load`` work without it).
Forward = Union[Any, Callable[[Mapping[str, jax.Array]], Any]]


def _haiku():
  """The ``haiku`` module (an optional dependency: the ``[meta]`` extra)."""
  try:
    import haiku  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("tasks.from_haiku needs dm-haiku: pip install 'metaopt-jax[meta]'.") from e
  return haiku


def _transformed(forward: Forward):
  hk = _haiku()
  if isinstance(forward, hk.Transformed):
    return forward
  if isinstance(forward, hk.TransformedWithState):
    raise TypeError("from_haiku takes a stateless model (hk.transform); models with "
                    "state (batch norm) are not supported: use layer norm instead.")
  if not callable(forward):
    raise TypeError(f"forward must be a haiku-transformed function or a function of the "
                    f"batch, got {type(forward).__name__}.")
  return hk.transform(forward)


def _check_data(data) -> Mapping[str, Mapping[str, jax.Array]]:
  if isinstance(data, str):
    return load_dataset(data)
  missing = [s for s in SPLITS if s not in data]
  if missing:
    raise ValueError(f"data lacks split(s) {missing}; give {{split: {{field: array}}}} for "
                     f"all of {SPLITS} (or a dataset name such as 'digits').")
  for split in SPLITS:
    sizes = {k: np.shape(v)[0] for k, v in data[split].items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"data[{split!r}] fields have different numbers of rows: {sizes}.")
  return {s: {k: jnp.asarray(v) for k, v in data[s].items()} for s in SPLITS}


def dense_param_info(params) -> Any:
  """μP roles of a haiku model's parameters, in the order haiku created them: the
  first weight matrix (2-D ``w``, or a conv kernel) is ``input``, the last is
  ``output``, the others ``hidden``; vectors are ``bias`` and anything else ``scalar``.
  Right for MLPs and plain conv nets; write the mapping by hand for other models."""
  flat = [(m, n) for m in params for n in params[m]]
  weights = [(m, n) for m, n in flat if n == "w" and np.ndim(params[m][n]) >= 2]
  info = {m: {} for m in params}
  for m, n in flat:
    x = params[m][n]
    if (m, n) in weights:
      role = ("input" if (m, n) == weights[0] else
              "output" if (m, n) == weights[-1] else "hidden")
      info[m][n] = ParamInfo(role, int(np.prod(np.shape(x)[:-1])), int(np.shape(x)[-1]))
    elif np.ndim(x) == 1:
      info[m][n] = ParamInfo("bias", 1, int(np.shape(x)[0]))
    else:
      info[m][n] = ParamInfo("scalar")
  return info


def from_haiku(name: str, forward: Forward, loss_fn: LossFn, data, batch_size: int,
               normalize_loss: Optional[Callable[[jax.Array], jax.Array]] = None,
               param_info: Optional[Callable[[Any], Any]] = None,
               metadata: Optional[Mapping[str, Any]] = None, init_seed=None,
               error_fn: Optional[LossFn] = None) -> Task:
  """A ``Task`` from a haiku model.

  Args:
    name: the task's name.
    forward: ``hk.transform``-ed function of the batch, or the function itself.
    loss_fn: ``(outputs, batch) -> scalar`` loss.
    data: ``{split: {field: (N, ...) array}}`` for every split, or a dataset name.
    batch_size: rows per batch.
    normalize_loss: loss normalizer for meta-training; default: chance level
      ``log(num_classes)`` when the data has a ``label`` field, else the loss of the
      initial parameters on one training batch.
    param_info: ``params -> pytree of ParamInfo`` (μP contract); e.g.
      ``dense_param_info`` for MLPs.
    metadata: e.g. ``{"dataset": ..., "architecture": ...}`` (read by reports and the
      leaderboard's leakage guard).
    init_seed: int or traced uint32 folded into the init key (a family's dynamic part).
    error_fn: optional ``(outputs, batch) -> scalar`` mean classification error in
      [0, 1] (e.g. ``lambda logits, b: tasks.common.classification_error(logits,
      b["label"])``); becomes ``Task.error_rate``. ``None``: the task has none.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  model = _transformed(forward)
  data = _check_data(data)
  abstract_batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype)
                    for k, v in data["train"].items()}

  def batch(data, key, split):
    return sample_rows(data[split], key, batch_size)

  def init(key):
    example = {k: jnp.zeros(s.shape, s.dtype) for k, s in abstract_batch.items()}
    return model.init(seed_key(key, init_seed), example)

  def loss(params, batch, key):
    return jnp.asarray(loss_fn(model.apply(params, key, batch), batch), jnp.float32)

  def error_rate(params, batch, key):
    return jnp.asarray(error_fn(model.apply(params, key, batch), batch), jnp.float32)

  if normalize_loss is None:
    if "label" in data["train"]:
      normalize_loss = classification_normalizer(num_classes(data))
    else:
      k_init, k_batch = jax.random.split(jax.random.PRNGKey(0))
      first = jax.jit(lambda d: loss(init(k_init), batch(d, k_batch, "train"), k_batch))(data)
      normalize_loss = make_normalizer(max(abs(float(first)), 1e-8))
  return Task(name=name, init=init, loss=loss, data=data, batch=batch,
              abstract_batch=abstract_batch, normalize_loss=normalize_loss,
              param_info=param_info, metadata=dict(metadata or {}),
              error_rate=None if error_fn is None else error_rate)


def from_haiku_family(name: str, make_forward: Callable[[Hashable], Forward],
                      loss_fn: LossFn, data, batch_size: int, statics: Sequence[Hashable],
                      param_info: Optional[Callable[[Any], Any]] = None,
                      metadata: Optional[Mapping[str, Any]] = None,
                      error_fn: Optional[LossFn] = None) -> TaskFamily:
  """A family of haiku tasks over model hyper-parameters.

  ``statics`` lists the hyper-parameter settings (hashable: a width, a tuple of
  widths, a dict turned into a tuple...) that decide shapes; ``make_forward(static)``
  builds the model for one. A sampled task draws one static setting (shared by a
  vmapped batch of tasks) and a random init seed (its dynamic part, different per
  task). ``param_info``, ``metadata`` and ``error_fn`` are as in ``from_haiku``.
  """
  statics = list(statics)
  if not statics:
    raise ValueError("statics must list at least one model setting.")
  data = _check_data(data)
  models = {}

  def model_for(static):
    if static not in models:
      models[static] = _transformed(make_forward(static))
    return models[static]

  def sample_static(key):
    return statics[int(jax.random.randint(key, (), 0, len(statics)))]

  # One normalizer for the family (members are built under tracing, where the
  # default, which may evaluate an initial loss, cannot run).
  normalize = from_haiku(name, model_for(statics[0]), loss_fn, data, batch_size).normalize_loss

  def make_task(static, seed):
    return from_haiku(f"{name}/{static}", model_for(static), loss_fn, data, batch_size,
                      normalize_loss=normalize, param_info=param_info,
                      metadata={**(metadata or {}), "family": name}, init_seed=seed,
                      error_fn=error_fn)

  return TaskFamily(name, sample_static, lambda key, static: random_seed(key), make_task,
                    metadata=dict(metadata or {}))
