"""Registry of hand-designed baseline optimizers.

Each baseline is a ``BaselineSpec``: a builder returning an optax transformation,
its default hyper-parameters and the space it is tuned over. ``get(name, **hparams)``
merges the hyper-parameters into the defaults (unknown keys are an error) and can
replace the constant learning rate by a schedule, for every optimizer alike.

The schedule family (AlgoPerf's): a baseline whose defaults hold the two
hyper-parameters ``warmup_fraction`` (float in [0, 1)) and ``lr_decay`` (one of
``DECAYS``; not ``decay``, which is RMSProp's moving-average rate) gets the learning rate
``warmup_decay_schedule(learning_rate, total_steps, warmup_fraction, lr_decay)``: a linear
warm-up from 0 over ``round(warmup_fraction * total_steps)`` steps, then ``lr_decay``
(constant, cosine to 0, linear to 0) over the remaining steps. Both are ordinary
hyper-parameters: they have defaults, may be searched, and ``warmup_fraction`` may be a
tracer (one compiled program for a sweep); ``lr_decay`` is a string and so static.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax.numpy as jnp
import optax

from metaopt.optimizers.space import Axis
from tasks.registry import Registry, UnknownNameError, unknown_name_message

#: Learning-rate schedules ``get(..., schedule=...)`` understands.
SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")

#: Decays of the schedule family (the ``lr_decay`` hyper-parameter).
DECAYS = ("constant", "cosine", "linear")

#: The schedule family's hyper-parameters; a spec with them in its defaults builds its
#: learning-rate schedule from them (``get``), the builder never sees them.
SCHEDULE_HPARAMS = ("warmup_fraction", "lr_decay")


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
  """A baseline optimizer.

  Attributes:
    name: registry name.
    build: ``(**hparams) -> optax.GradientTransformation``; receives every key of
      ``defaults`` but ``SCHEDULE_HPARAMS`` (``learning_rate`` may be a schedule).
    defaults: default hyper-parameters (sensible for a small network).
    search_space: hyper-parameter name -> ``LogUniform`` / ``Uniform`` / ``Choice``;
      the keys are a subset of ``defaults``; the rest stay at their defaults.
    self_tuning: True when the optimizer needs no tuning (AlgoPerf's self-tuning
      ruleset: one run at the defaults).
    description: one line for ``metaopt list optimizers``.
    schedulable: False when the optimizer only takes a constant learning rate
      (schedule-free methods replace the schedule by iterate averaging).
  """
  name: str
  build: Callable[..., optax.GradientTransformation]
  defaults: Mapping[str, Any]
  search_space: Mapping[str, Any]
  self_tuning: bool = False
  description: str = ""
  schedulable: bool = True

  def __post_init__(self):
    extra = sorted(set(self.search_space) - set(self.defaults))
    if extra:
      raise ValueError(f"{self.name}: search_space keys {extra} have no default.")
    for key, axis in self.search_space.items():
      if not isinstance(axis, Axis):
        raise TypeError(f"{self.name}: search_space[{key!r}] must be LogUniform, "
                        f"Uniform or Choice, got {type(axis).__name__}.")
    if "learning_rate" not in self.defaults:
      raise ValueError(f"{self.name}: every baseline needs a 'learning_rate' default.")
    family = [k for k in SCHEDULE_HPARAMS if k in self.defaults]
    if family and len(family) != len(SCHEDULE_HPARAMS):
      raise ValueError(f"{self.name}: the schedule family needs all of {SCHEDULE_HPARAMS} "
                       f"in defaults, got only {family}.")
    if family and not self.schedulable:
      raise ValueError(f"{self.name}: a constant-learning-rate optimizer "
                       "(schedulable=False) cannot have schedule hyper-parameters.")

  @property
  def has_schedule_family(self) -> bool:
    """True when ``warmup_fraction`` and ``lr_decay`` are hyper-parameters."""
    return "lr_decay" in self.defaults


SPECS: Registry[BaselineSpec] = Registry("optimizer")

#: The error of an unknown optimizer name (the registry's ``UnknownNameError``).
UnknownOptimizerError = UnknownNameError


def register(spec: BaselineSpec) -> BaselineSpec:
  """Registers ``spec`` under ``spec.name``."""
  return SPECS.register(spec.name, spec)


def names() -> List[str]:
  return SPECS.names()


def spec(name: str) -> BaselineSpec:
  """The ``BaselineSpec`` registered as ``name``."""
  return SPECS.get(name)


def _check_type(name: str, key: str, default: Any, value: Any) -> None:
  """Refuses a text or container value for a number/boolean hyper-parameter (e.g.
  ``--hparam b1=abc``), which would otherwise fail deep inside the first update."""
  if not isinstance(default, (bool, int, float)):
    return  # None or a structured default: the builder checks the value.
  if isinstance(value, (str, bytes, tuple, list, dict)):
    kind = "true or false" if isinstance(default, bool) else "a number"
    raise ValueError(f"Optimizer {name!r}: hyper-parameter {key} must be {kind} (default "
                     f"{default!r}), got {value!r}; e.g. --hparam {key}={default!r}.")


def config(name: str, **hparams) -> Dict[str, Any]:
  """The full hyper-parameter dict of ``name``: defaults updated by ``hparams``.

  Raises ``ValueError`` naming the valid keys for unknown ones, for a text value of
  a number or boolean hyper-parameter, and for a non-positive or non-finite learning
  rate.
  """
  s = spec(name)
  unknown = sorted(set(hparams) - set(s.defaults))
  if unknown:
    raise ValueError(f"Optimizer {name!r} has no hyper-parameter(s) {unknown}; "
                     f"valid ones: {sorted(s.defaults)}.")
  for key, value in hparams.items():
    _check_type(name, key, s.defaults[key], value)
  cfg = dict(s.defaults)
  cfg.update(hparams)
  lr = cfg["learning_rate"]
  if isinstance(lr, (int, float)) and not (math.isfinite(lr) and lr > 0):
    raise ValueError(f"learning_rate must be a positive finite number, got {lr}.")
  if s.has_schedule_family:
    _check_schedule_family(cfg["warmup_fraction"], cfg["lr_decay"])
  return cfg


def _check_schedule_family(warmup_fraction: Any, decay: Any) -> None:
  if decay not in DECAYS:
    raise ValueError(unknown_name_message("lr_decay", decay, DECAYS))
  if isinstance(warmup_fraction, (int, float)) and not 0 <= warmup_fraction < 1:
    raise ValueError(f"warmup_fraction must be in [0, 1) (a fraction of total_steps), "
                     f"got {warmup_fraction}.")


def warmup_decay_schedule(learning_rate: Any, total_steps: int, warmup_fraction: Any = 0.0,
                          decay: str = "constant") -> optax.Schedule:
  """The schedule family: ``step -> learning rate`` (AlgoPerf's warm-up + decay).

  With ``W = round(warmup_fraction * total_steps)`` and ``T = total_steps``: the rate
  is ``learning_rate * t / W`` for ``t < W`` (linear warm-up from 0), then
  ``learning_rate * d(p)`` with ``p = min((t - W) / (T - W), 1)`` and ``d`` = 1
  (``constant``), ``(1 + cos(pi p)) / 2`` (``cosine``) or ``1 - p`` (``linear``).
  ``learning_rate`` and ``warmup_fraction`` may be traced; ``decay`` is static. A
  callable ``learning_rate`` (a schedule) is multiplied by the family's factor.
  ``warmup_fraction=0`` and ``decay="cosine"`` equal ``optax.cosine_decay_schedule``.
  """
  _check_schedule_family(warmup_fraction, decay)
  if total_steps is None or total_steps <= 0:
    raise ValueError(f"The learning-rate schedule (warmup_fraction={warmup_fraction}, "
                     f"lr_decay={decay!r}) needs total_steps > 0 (the training length); got "
                     f"{total_steps}. Pass total_steps, or use lr_decay='constant' with "
                     "warmup_fraction=0 for a constant rate.")
  total = jnp.float32(total_steps)
  warmup = jnp.round(jnp.asarray(warmup_fraction, jnp.float32) * total)

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    progress = jnp.clip((t - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
    if decay == "cosine":
      factor = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif decay == "linear":
      factor = 1.0 - progress
    else:
      factor = jnp.ones_like(progress)
    factor = jnp.where(t < warmup, t / jnp.maximum(warmup, 1.0), factor)
    peak = learning_rate(count) if callable(learning_rate) else learning_rate
    return peak * factor

  return schedule


def make_schedule(learning_rate: float, schedule: str = "constant",
                  total_steps: Optional[int] = None,
                  warmup_steps: Optional[int] = None) -> optax.ScalarOrSchedule:
  """A learning-rate schedule peaking at ``learning_rate``.

  ``constant``: the number itself. ``cosine``: cosine decay to 0 over
  ``total_steps``. ``linear``: linear decay to 0 over ``total_steps``.
  ``warmup_cosine``: linear warm-up from 0 over ``warmup_steps`` (default 5% of
  ``total_steps``), then cosine decay to 0 at ``total_steps``.
  """
  if schedule not in SCHEDULES:
    raise ValueError(unknown_name_message("schedule", schedule, SCHEDULES))
  if schedule == "constant":
    return learning_rate
  if total_steps is None or total_steps <= 0:
    raise ValueError(f"schedule={schedule!r} needs total_steps > 0 (the training length); "
                     f"got {total_steps}.")
  if schedule == "cosine":
    return optax.cosine_decay_schedule(learning_rate, total_steps)
  if schedule == "linear":
    return optax.linear_schedule(learning_rate, 0.0, total_steps)
  if warmup_steps is None:
    warmup_steps = max(1, total_steps // 20)
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), "
                     f"got {warmup_steps}.")
  return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, total_steps)


def get(name: str, *, schedule: Optional[str] = None, total_steps: Optional[int] = None,
        warmup_steps: Optional[int] = None, **hparams) -> optax.GradientTransformation:
  """The baseline ``name`` as an optax transformation.

  Args:
    name: one of ``names()``.
    schedule: ``None`` (default): the optimizer's own schedule: the schedule family
      of its ``warmup_fraction`` / ``lr_decay`` hyper-parameters when it has them (see
      the module docstring), else a constant rate. One of ``SCHEDULES`` replaces
      it (then ``warmup_fraction`` / ``lr_decay`` may not be given).
    total_steps: training length; needed by every schedule but a constant rate.
    warmup_steps: warm-up of ``schedule="warmup_cosine"`` (see ``make_schedule``).
    **hparams: hyper-parameters overriding ``spec(name).defaults``.
  """
  s = spec(name)
  cfg = config(name, **hparams)
  family = {k: cfg.pop(k) for k in SCHEDULE_HPARAMS if k in cfg}
  if schedule is not None and schedule != "constant" and not s.schedulable:
    raise ValueError(f"Optimizer {name!r} takes only a constant learning rate "
                     f"(schedule={schedule!r} given); use schedule='constant'.")
  if schedule is not None:
    given = sorted(set(SCHEDULE_HPARAMS) & set(hparams))
    if given:
      raise ValueError(f"Optimizer {name!r}: give the schedule either as schedule="
                       f"{schedule!r} or as the hyper-parameters {given}, not both.")
    cfg["learning_rate"] = make_schedule(cfg["learning_rate"], schedule, total_steps,
                                         warmup_steps)
  elif family and not (family["lr_decay"] == "constant"
                       and isinstance(family["warmup_fraction"], (int, float))
                       and family["warmup_fraction"] == 0):
    cfg["learning_rate"] = warmup_decay_schedule(cfg["learning_rate"], total_steps,
                                                 family["warmup_fraction"], family["lr_decay"])
  return s.build(**cfg)


def parse_value(text: str) -> Any:
  """A command-line value: Python/JSON literal (``1e-3``, ``(0.9, 0.99)``,
  ``true``/``false``/``none`` in any case), else the string itself."""
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_hparams(items: Sequence[str]) -> Dict[str, Any]:
  """``["b1=0.95", "nesterov=true"]`` -> ``{"b1": 0.95, "nesterov": True}``."""
  out = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"Hyper-parameter {item!r} must look like name=value (e.g. b1=0.95).")
    key, value = item.split("=", 1)
    out[key.strip()] = parse_value(value)
  return out
