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
array}}`` over the four ``SPLITS`` (or a dataset name from ``tasks.datasets``);
``split_data({field: array})`` makes it from your arrays. The four splits:

* ``train``: the batches every inner step trains on;
* ``inner_valid``: the validation loss of a run (``metaopt train``'s valid loss,
  tuning's score, the leaderboard's curves and targets);
* ``outer_valid``: meta-training's held-out batches (the ``valid`` meta-loss and the
  held-out curves), never stepped on by the inner optimizer;
* ``test``: held out: no metaopt loop trains, tunes or meta-trains on it.

Data are checked when the task is built: a non-finite value names its split and
field, and a ``label`` field must hold integer class ids ``0..C-1`` with ``C`` the
model's number of outputs (a NaN or out-of-range label fails here, not later as a
"diverged" run). Functions using haiku's random numbers (dropout) get the loss key as
their ``rng``.

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


#: ``split_data``'s default fractions of the rows per split.
DEFAULT_FRACTIONS = {"train": 0.7, "inner_valid": 0.1, "outer_valid": 0.1, "test": 0.1}


def split_data(arrays: Mapping[str, Any], fractions: Optional[Mapping[str, float]] = None,
               seed: int = 0, test: Optional[Mapping[str, Any]] = None
               ) -> dict:
  """Your arrays as the ``{split: {field: array}}`` that ``from_haiku`` takes.

  Args:
    arrays: ``{field: (N, ...) array}``, e.g. ``{"image": x, "label": y}`` (every field
      with the same number of rows ``N``).
    fractions: ``{split: fraction}`` of the rows for each of ``SPLITS`` (default
      ``DEFAULT_FRACTIONS``: 0.7 / 0.1 / 0.1 / 0.1); with ``test`` given, only
      ``train``, ``inner_valid`` and ``outer_valid`` (rescaled to sum to 1).
    seed: the rows are shuffled with this numpy seed before splitting.
    test: your own held-out set ``{field: array}`` (e.g. an official test split),
      used as ``test`` as is.

  Returns:
    ``{split: {field: numpy array}}`` with every split non-empty.
  """
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in arrays.items()}
  if not sizes or None in sizes.values() or len(set(sizes.values())) != 1:
    raise ValueError(f"split_data takes {{field: (N, ...) array}} with the same N for every "
                     f"field; got rows {sizes}.")
  names = [s for s in SPLITS if not (test is not None and s == "test")]
  fractions = dict(fractions or {s: DEFAULT_FRACTIONS[s] for s in names})
  unknown = sorted(set(fractions) - set(names)) + sorted(set(names) - set(fractions))
  if unknown or any(f <= 0 for f in fractions.values()):
    raise ValueError(f"fractions must give a positive fraction for each of {names}; got "
                     f"{fractions}.")
  n = next(iter(sizes.values()))
  total = sum(fractions.values())
  counts = [int(np.floor(n * fractions[s] / total)) for s in names]
  counts[0] += n - sum(counts)  # Rounding leftovers go to train.
  if min(counts) < 1:
    raise ValueError(f"{n} rows are too few to split into {dict(zip(names, counts))}; give "
                     "more rows or larger fractions.")
  order = np.random.default_rng(seed).permutation(n)
  out, start = {}, 0
  for split, count in zip(names, counts):
    idx = order[start:start + count]
    out[split] = {k: np.asarray(v)[idx] for k, v in arrays.items()}
    start += count
  if test is not None:
    out["test"] = {k: np.asarray(v) for k, v in test.items()}
  return {s: out[s] for s in SPLITS}


def _check_data(data) -> Mapping[str, Mapping[str, jax.Array]]:
  if isinstance(data, str):
    return load_dataset(data)
  if not isinstance(data, Mapping):
    raise TypeError(f"data must be {{split: {{field: array}}}} or a dataset name, got "
                    f"{type(data).__name__}.")
  missing = [s for s in SPLITS if s not in data]
  if missing:
    hint = (" To split your own arrays, use tasks.haiku_tasks.split_data({field: array})."
            if data and not any(s in data for s in SPLITS) else "")
    raise ValueError(f"data lacks split(s) {missing}; give {{split: {{field: array}}}} for "
                     f"all of {SPLITS} (or a dataset name such as 'digits').{hint}")
  for split in SPLITS:
    sizes = {k: np.shape(v)[0] for k, v in data[split].items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"data[{split!r}] fields have different numbers of rows: {sizes}.")
    for field, v in data[split].items():
      _check_field(split, field, np.asarray(v))
  return {s: {k: jnp.asarray(v) for k, v in data[s].items()} for s in SPLITS}


def _check_field(split: str, field: str, v: np.ndarray) -> None:
  """A non-finite value, or a label that is not a class id, fails naming the field."""
  where = f"data[{split!r}][{field!r}]"
  if np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.complexfloating):
    bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
    if bad:
      raise ValueError(f"{where} has {bad} non-finite value(s) (NaN or inf); clean or drop "
                       "those rows.")
  if field != "label":
    return
  if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
    raise ValueError(f"{where} must hold integer class ids, got dtype {v.dtype}.")
  if np.issubdtype(v.dtype, np.floating) and np.any(v != np.round(v)):
    raise ValueError(f"{where} holds non-integer values (e.g. {v[v != np.round(v)].flat[0]!r}); "
                     "labels are class ids 0..C-1.")
  if v.size and v.min() < 0:
    raise ValueError(f"{where} holds negative label {v.min()!r}; labels are class ids "
                     "0..C-1.")


def _check_labels_fit(model, abstract_batch, data) -> None:
  """A ``label`` larger than the model's last output dimension (its number of logits)
  fails before any training (``softmax_cross_entropy`` would silently misread it)."""
  if "label" not in data["train"]:
    return
  example = {k: jnp.zeros(s.shape, s.dtype) for k, s in abstract_batch.items()}
  try:
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), example)
    out = jax.eval_shape(model.apply, params, jax.random.PRNGKey(0), example)
  except Exception:  # pylint: disable=broad-except  # the model's own error shows at init
    return
  label_ndim = len(abstract_batch["label"].shape)
  if not hasattr(out, "shape") or len(out.shape) != label_ndim + 1:
    return  # Not one row of logits per label: nothing to compare.
  n_out = out.shape[-1]
  for split in SPLITS:
    top = int(np.max(np.asarray(data[split]["label"])))
    if top >= n_out:
      raise ValueError(f"data[{split!r}]['label'] holds label {top} but the model outputs "
                       f"{n_out} classes (labels must be 0..{n_out - 1}).")


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
  _check_labels_fit(model, abstract_batch, data)
  return _build(name, model, loss_fn, data, batch_size, abstract_batch, normalize_loss,
                param_info, metadata, init_seed, error_fn)


def _build(name, model, loss_fn, data, batch_size, abstract_batch, normalize_loss,
           param_info, metadata, init_seed, error_fn) -> Task:
  """``from_haiku`` on checked data (a family builds its members here, under tracing)."""

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
  abstract_batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype)
                    for k, v in data["train"].items()}
  for static in statics:  # Every member's number of outputs covers the labels.
    _check_labels_fit(model_for(static), abstract_batch, data)
  normalize = _build(name, model_for(statics[0]), loss_fn, data, batch_size, abstract_batch,
                     None, None, None, None, None).normalize_loss

  def make_task(static, seed):
    return _build(f"{name}/{static}", model_for(static), loss_fn, data, batch_size,
                  abstract_batch, normalize, param_info, {**(metadata or {}), "family": name},
                  seed, error_fn)

  return TaskFamily(name, sample_static, lambda key, static: random_seed(key), make_task,
                    metadata=dict(metadata or {}))
