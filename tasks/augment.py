"""Task augmentations (VeLO's meta-training distribution): wrappers over tasks.

Every augmentation accepts a ``Task`` or a ``TaskFamily`` and returns the same kind,
renamed with a suffix (``name + "+bf16"`` ...). On a family, hyper-parameters that do
not decide shapes (reparameterization scales, gradient-noise scale) are sampled into
the dynamic config, so a batch from ``sample_batch`` still vmaps; a reduced batch
size decides shapes and is part of the static config. The wrapped family's own
dynamic config is sampled from the same key as without the augmentation (the
augmentation draws from ``fold_in(key, tag)``), so ``augmented.sample(key)`` wraps
the very task ``family.sample(key)`` gives.

* ``reparameterize``: the optimizer sees ``p'`` and the loss sees ``scale * p'`` with
  log-uniform ``scale`` per model (``global``), per tensor (``tensor``) or per
  entry (``parameter``); ``init`` returns ``init(key) / scale``, so the wrapped and
  original tasks start at the same function.
* ``reduce_batch``: keeps the first ``batch_size`` rows (leading axis) of every
  batch leaf.
* ``bfloat16``: the loss casts floating params and batch leaves to bfloat16 and
  returns float32; gradients flow back to the float32 params through the casts.
* ``normalize_gradients``: a ``jax.custom_vjp`` on the loss whose backward pass
  returns each gradient tensor divided by its L2 norm (the value is unchanged).
* ``gradient_noise``: a ``jax.custom_vjp`` whose backward pass adds ``N(0, scale^2)``
  noise to every gradient entry, drawn from the loss ``key`` (same key, same noise).

``Task.error_rate`` follows the loss: it sees the reparameterized weights, the
reduced batch and the bfloat16 casts; the gradient maps leave it unchanged.

Configs name augmentations as data: ``apply(task_or_family, [{"name":
"reparameterize", "level": "tensor"}, "bfloat16"])`` applies them in order.

The two custom_vjp augmentations stay differentiable in reverse mode (meta-gradients
through an inner step work) but not in forward mode (``jax.jvp``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Task, TaskFamily, abstract_params
from tasks.registry import unknown_name_error

TaskOrFamily = Union[Task, TaskFamily]

LEVELS = ("global", "tensor", "parameter")

# Distinct fold_in tags so each augmentation draws independent randomness.
_TAG_REPARAM = 0x7265
_TAG_BATCH = 0x6273
_TAG_NOISE = 0x6e73
_TAG_NOISE_DRAW = 0x6e64


def _rename(task: Task, suffix: str, **changes) -> Task:
  augmentations = tuple(task.metadata.get("augmentations", ())) + (suffix,)
  return dataclasses.replace(task, name=task.name + "+" + suffix,
                             metadata={**task.metadata, "augmentations": augmentations},
                             **changes)


def _family(family: TaskFamily, suffix: str, tag: int,
            sample_hparams: Callable[[jax.Array, Any], Any],
            wrap: Callable[[Task, Any], Task]) -> TaskFamily:
  """A family whose dynamic config is ``{"task": inner, "augment": hparams}``."""

  def sample_dynamic(key, static):
    return {"task": family.sample_dynamic(key, static),
            "augment": sample_hparams(jax.random.fold_in(key, tag), static)}

  def make_task(static, dynamic):
    return wrap(family.make_task(static, dynamic["task"]), dynamic["augment"])

  return TaskFamily(name=family.name + "+" + suffix, sample_static=family.sample_static,
                    sample_dynamic=sample_dynamic, make_task=make_task,
                    metadata={**family.metadata, "augmentations": tuple(
                        family.metadata.get("augmentations", ())) + (suffix,)})


def _check(x, what: str) -> None:
  if not isinstance(x, (Task, TaskFamily)):
    raise TypeError(f"{what} takes a tasks.Task or tasks.TaskFamily, got {type(x).__name__}.")


def _check_range(low: float, high: float) -> None:
  if not 0 < low <= high:
    raise ValueError(f"Need 0 < low <= high for a log-uniform range, got ({low}, {high}).")


def _check_level(level: str) -> None:
  if level not in LEVELS:
    raise ValueError(f"Unknown reparameterization level {level!r}; expected one of {LEVELS}.")


def _log_uniform(key, shape, low: float, high: float):
  _check_range(low, high)
  u = jax.random.uniform(key, shape, jnp.float32)
  return jnp.exp(math.log(low) + u * (math.log(high) - math.log(low)))


# ---------------------------------------------------------------------------------
# Reparameterized weights.


def sample_scales(key: jax.Array, params_like, level: str = "tensor",
                  scale_range: Tuple[float, float] = (1e-2, 1e2)):
  """Log-uniform positive scales matching ``params_like`` (arrays or ShapeDtypeStructs).

  ``global``: one scalar shared by all leaves; ``tensor``: one scalar per leaf;
  ``parameter``: one per entry (leaf shape). Leaves come back float32 and broadcast
  against their parameter.
  """
  _check_level(level)
  leaves, treedef = jax.tree_util.tree_flatten(params_like)
  if level == "global":
    s = _log_uniform(key, (), *scale_range)
    return jax.tree_util.tree_unflatten(treedef, [s] * len(leaves))
  keys = jax.random.split(key, len(leaves))
  shapes = [() if level == "tensor" else tuple(leaf.shape) for leaf in leaves]
  return jax.tree_util.tree_unflatten(
      treedef, [_log_uniform(k, s, *scale_range) for k, s in zip(keys, shapes)])


def reparameterize_with(task: Task, scales, suffix: str = "reparam") -> Task:
  """``task`` seen through ``p = scales * p'``: the optimizer updates ``p'``.

  Args:
    task: the task to wrap.
    scales: pytree with the params' structure; each leaf broadcasts against its
      parameter (a scalar or the parameter's shape). May be traced.
    suffix: appended to the name.
  """
  def scale(params):
    return jax.tree_util.tree_map(lambda s, p: (s * p).astype(p.dtype), scales, params)

  def init(key):
    return jax.tree_util.tree_map(lambda s, p: (p / s).astype(p.dtype), scales, task.init(key))

  def loss(params, batch, key):
    return task.loss(scale(params), batch, key)

  def error_rate(params, batch, key):
    return task.error_rate(scale(params), batch, key)

  return _rename(task, suffix, init=init, loss=loss,
                 error_rate=None if task.error_rate is None else error_rate)


def reparameterize(x: TaskOrFamily, level: str = "tensor",
                   scale_range: Tuple[float, float] = (1e-2, 1e2), seed: int = 0) -> TaskOrFamily:
  """Reparameterized weights with log-uniform scales (see ``sample_scales``).

  A Task gets scales drawn from ``PRNGKey(seed)``; a family draws them per sampled
  task into its dynamic config. Renamed ``+reparam_<level>``.
  """
  _check(x, "reparameterize")
  _check_level(level)
  _check_range(*scale_range)
  suffix = f"reparam_{level}"
  if isinstance(x, Task):
    scales = sample_scales(jax.random.PRNGKey(seed), abstract_params(x), level, scale_range)
    return reparameterize_with(x, scales, suffix)

  def wrap(task, key):
    scales = sample_scales(key, abstract_params(task), level, scale_range)
    return reparameterize_with(task, scales, suffix)

  # The scales' shapes depend on the task, so the dynamic config holds their key.
  return _family(x, suffix, _TAG_REPARAM, lambda key, static: key, wrap)


# ---------------------------------------------------------------------------------
# Reduced batch size.


def _reduce_batch_task(task: Task, batch_size: int) -> Task:
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
  leading = {leaf.shape[0] if leaf.shape else None
             for leaf in jax.tree_util.tree_leaves(task.abstract_batch)}
  if len(leading) != 1 or None in leading:
    raise ValueError(f"reduce_batch needs every batch leaf of {task.name!r} to share a "
                     f"leading batch axis; abstract_batch is {task.abstract_batch}.")
  full = leading.pop()
  if batch_size > full:
    raise ValueError(f"batch_size={batch_size} exceeds {task.name!r}'s batch size {full}; "
                     f"pick at most {full}.")

  def batch(data, key, split):
    return jax.tree_util.tree_map(lambda x: x[:batch_size], task.batch(data, key, split))

  abstract = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct((batch_size,) + tuple(s.shape[1:]), s.dtype),
      task.abstract_batch)
  return _rename(task, f"batch{batch_size}", batch=batch, abstract_batch=abstract)


def reduce_batch(x: TaskOrFamily, batch_size: Union[int, Sequence[int]]) -> TaskOrFamily:
  """Slices every batch to its first ``batch_size`` rows. Renamed ``+batch<size>``.

  On a family ``batch_size`` may be a sequence of choices: one is drawn per
  ``sample_static`` (the batch size decides shapes, so tasks sampled together
  share it).
  """
  _check(x, "reduce_batch")
  if isinstance(x, Task):
    return _reduce_batch_task(x, batch_size)
  choices = tuple(batch_size) if isinstance(batch_size, Sequence) else (batch_size,)
  if not choices or not all(isinstance(c, (int, np.integer)) and c >= 1 for c in choices):
    raise ValueError(f"reduce_batch needs positive int batch sizes, got {batch_size!r}.")

  def sample_static(key):
    index = int(jax.random.randint(jax.random.fold_in(key, _TAG_BATCH), (), 0, len(choices)))
    return (x.sample_static(key), choices[index])

  def sample_dynamic(key, static):
    return x.sample_dynamic(key, static[0])

  def make_task(static, dynamic):
    return _reduce_batch_task(x.make_task(static[0], dynamic), static[1])

  suffix = "batch" + "|".join(map(str, choices))
  return TaskFamily(name=f"{x.name}+{suffix}", sample_static=sample_static,
                    sample_dynamic=sample_dynamic, make_task=make_task,
                    metadata={**x.metadata, "augmentations": tuple(
                        x.metadata.get("augmentations", ())) + (suffix,)})


# ---------------------------------------------------------------------------------
# bfloat16 compute.


def _to_bf16(tree):
  return jax.tree_util.tree_map(
      lambda v: v.astype(jnp.bfloat16) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


def _bfloat16_task(task: Task) -> Task:
  def loss(params, batch, key):
    return task.loss(_to_bf16(params), _to_bf16(batch), key).astype(jnp.float32)

  def error_rate(params, batch, key):
    return task.error_rate(_to_bf16(params), _to_bf16(batch), key).astype(jnp.float32)

  return _rename(task, "bf16", loss=loss,
                 error_rate=None if task.error_rate is None else error_rate)


def bfloat16(x: TaskOrFamily) -> TaskOrFamily:
  """Loss computed in bfloat16 (floating params and batch leaves cast; ints kept).

  Params stay float32 for the optimizer; the loss is returned as float32.
  Renamed ``+bf16``.
  """
  _check(x, "bfloat16")
  if isinstance(x, Task):
    return _bfloat16_task(x)
  return _family(x, "bf16", 0, lambda key, static: (), lambda t, _: _bfloat16_task(t))


# ---------------------------------------------------------------------------------
# Gradient transformations applied in the backward pass of the loss.


def _with_grad_map(task: Task, suffix: str, grad_map: Callable, hparams) -> Task:
  """``task`` whose loss gradient is ``grad_map(grads, key, hparams)``.

  The value is the original loss; only the VJP changes (scaled by the incoming
  cotangent, so ``grad(c * loss) = c * grad_map(grad loss)``).
  """
  @jax.custom_vjp
  def loss(params, batch, key, hp):
    return task.loss(params, batch, key)

  def fwd(params, batch, key, hp):
    value, grads = jax.value_and_grad(task.loss)(params, batch, key)
    return value, (grad_map(grads, key, hp),)

  def bwd(res, cotangent):
    (grads,) = res
    return (jax.tree_util.tree_map(lambda g: (cotangent * g).astype(g.dtype), grads),
            None, None, None)

  loss.defvjp(fwd, bwd)
  return _rename(task, suffix, loss=lambda params, batch, key: loss(params, batch, key, hparams))


def _unit_norm(grads, key, eps):
  return jax.tree_util.tree_map(
      lambda g: g / (jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)))) + eps).astype(g.dtype),
      grads)


def normalize_gradients(x: TaskOrFamily, eps: float = 1e-12) -> TaskOrFamily:
  """Each gradient tensor rescaled to unit L2 norm (``g / (||g|| + eps)``).

  Implemented as a ``jax.custom_vjp`` on the loss, so any optimizer that
  differentiates the task sees normalized gradients. Renamed ``+gradnorm``.
  """
  _check(x, "normalize_gradients")
  wrap = lambda task, _: _with_grad_map(task, "gradnorm", _unit_norm, jnp.float32(eps))
  if isinstance(x, Task):
    return wrap(x, None)
  return _family(x, "gradnorm", 0, lambda key, static: (), wrap)


def _add_noise(grads, key, scale):
  leaves, treedef = jax.tree_util.tree_flatten(grads)
  keys = jax.random.split(jax.random.fold_in(key, _TAG_NOISE_DRAW), len(leaves))
  noisy = [g + (scale * jax.random.normal(k, g.shape, jnp.float32)).astype(g.dtype)
           for g, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, noisy)


def gradient_noise(x: TaskOrFamily,
                   scale: Union[float, Tuple[float, float]] = 0.01) -> TaskOrFamily:
  """Adds ``N(0, scale^2)`` noise to every gradient entry, keyed by the loss key.

  On a Task ``scale`` is a float. On a family it is a float or a ``(low, high)``
  range: one scale per sampled task, log-uniform, in the dynamic config.
  Renamed ``+gradnoise``.
  """
  _check(x, "gradient_noise")
  wrap = lambda task, s: _with_grad_map(task, "gradnoise", _add_noise, s)
  if isinstance(x, Task):
    if not isinstance(scale, (int, float)) or scale < 0:
      raise ValueError(f"gradient_noise on a Task needs a scale >= 0, got {scale!r}.")
    return wrap(x, jnp.float32(scale))
  if isinstance(scale, (int, float)):
    if scale < 0:
      raise ValueError(f"gradient_noise needs a scale >= 0, got {scale!r}.")
    sample = lambda key, static: jnp.float32(scale)
  else:
    low, high = scale
    _check_range(low, high)
    sample = lambda key, static: _log_uniform(key, (), low, high)
  return _family(x, "gradnoise", _TAG_NOISE, sample, wrap)


# ---------------------------------------------------------------------------------
# Augmentations named in configs.

AUGMENTATIONS = {
    "reparameterize": reparameterize,
    "reduce_batch": reduce_batch,
    "bfloat16": bfloat16,
    "normalize_gradients": normalize_gradients,
    "gradient_noise": gradient_noise,
}


def apply(x: TaskOrFamily, specs: Sequence[Union[str, Mapping[str, Any]]]) -> TaskOrFamily:
  """Applies augmentations given as data, in order.

  Args:
    x: a Task or TaskFamily.
    specs: each a name from ``AUGMENTATIONS`` or a mapping ``{"name": ..., **options}``
      whose options are that function's keyword arguments, e.g.
      ``[{"name": "gradient_noise", "scale": [0.001, 0.1]}, "bfloat16"]``.
  """
  for spec in specs:
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if name not in AUGMENTATIONS:
      raise unknown_name_error("augmentation", str(name), list(AUGMENTATIONS))
    fn = AUGMENTATIONS[name]
    allowed = list(inspect.signature(fn).parameters)[1:]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
      raise ValueError(f"Augmentation {name!r} has no option(s) {unknown}; "
                       f"its options are {allowed}.")
    x = fn(x, **options)
  return x
