"""Meta-training configuration: a typed dataclass, validated on load.

A config file ``configs/<experiment>.py`` defines ``get_config(variant=...)`` returning
a ``MetaTrainConfig``; ``load_config(path, overrides)`` imports it and applies
``--set key=value`` overrides (values parsed as Python/JSON literals and checked
against the field's type). Unknown keys fail with the list of valid ones.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from metaopt.meta.estimators import ESTIMATORS, FULL_ES_LOSSES
from metaopt.meta.truncation import SCHEDULES
from metaopt.meta.unroll import META_LOSSES

OUTER_OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")
GRAD_CLIPS = ("value", "global_norm", "none")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """Everything that defines a meta-training run (same config + seed = same numbers).

  Task and optimizer:
    family: task family registry name (``tasks.get_family``).
    lopt: learned-optimizer architecture (``metaopt.lopt.arch_names()``).
    lopt_config: fields of that architecture's config.

  Estimator and truncations:
    estimator: one of ``ESTIMATORS``, or ``"mix"`` with ``mix_weights``.
    mix_weights: ``{estimator: weight}`` for ``"mix"``.
    num_tasks: in-flight inner tasks (sharded over devices; divisible by their count).
    sigma: ES/PES perturbation std.
    full_es_loss: ``avg``, ``min`` or ``last`` (full-unroll ES only).
    meta_loss: ``train`` (mean over truncation), ``final`` or ``valid``.
    schedule: truncation schedule (``SCHEDULES``).
    truncation_length: inner steps per outer step.
    horizon / min_horizon: inner-run length (max / min for ``loguniform``).
    random_offsets: desynchronize restarts of the in-flight tasks.

  Outer loop:
    num_steps: outer (meta) steps.
    outer_optimizer / outer_lr / lr_schedule / warmup_steps: optax optimizer on theta.
    grad_clip / clip_value: ``value`` (elementwise, as learned_optimization) or
      ``global_norm`` clipping of the meta-gradient before the optimizer.
    grad_accum: meta-gradient estimates averaged per outer update.
    resample_every: restart every in-flight task every this many outer steps (0: only
      when runs reach their horizon).

  Evaluation, logging, checkpoints:
    eval_every: evaluate theta on ``eval_tasks`` held-out tasks every this many steps
      (0: never), training ``eval_horizon`` inner steps, against Adam ``eval_adam_lr``.
    log_every: metrics window / progress refresh (outer steps).
    checkpoint_every / keep_checkpoints: checkpoint period and how many to keep.
    run_dir: output directory (metrics, curves, checkpoints, exported theta).
    wandb_mode / wandb_project: wandb settings (offline by default).
    seed: the one seed of the run.
  """
  name: str = "meta_train"
  family: str = "mlp_digits_w32_d2_family"
  lopt: str = "mlp"
  lopt_config: Dict[str, Any] = dataclasses.field(default_factory=dict)

  estimator: str = "pes"
  mix_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
  num_tasks: int = 8
  sigma: float = 0.01
  full_es_loss: str = "avg"
  meta_loss: str = "train"
  schedule: str = "constant"
  truncation_length: int = 20
  horizon: int = 200
  min_horizon: int = 0
  random_offsets: bool = True

  num_steps: int = 1000
  outer_optimizer: str = "adam"
  outer_lr: float = 1e-3
  lr_schedule: str = "constant"
  warmup_steps: int = 0
  grad_clip: str = "value"
  clip_value: float = 3.0
  grad_accum: int = 1
  resample_every: int = 0

  eval_every: int = 100
  eval_tasks: int = 4
  eval_horizon: int = 200
  eval_adam_lr: float = 1e-3
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 3
  run_dir: str = "runs/meta_train"
  wandb_mode: str = "offline"
  wandb_project: str = "metaopt"
  seed: int = 0

  def __post_init__(self):
    _check_choice("estimator", self.estimator, ESTIMATORS + ("mix",))
    _check_choice("meta_loss", self.meta_loss, META_LOSSES)
    _check_choice("schedule", self.schedule, SCHEDULES)
    _check_choice("full_es_loss", self.full_es_loss, FULL_ES_LOSSES)
    _check_choice("outer_optimizer", self.outer_optimizer, OUTER_OPTIMIZERS)
    _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
    _check_choice("grad_clip", self.grad_clip, GRAD_CLIPS)
    if self.estimator == "mix":
      if not self.mix_weights:
        raise ValueError("estimator='mix' needs mix_weights, e.g. {'pes': 0.5, 'tbptt': 0.5}.")
      for name in self.mix_weights:
        _check_choice("mix_weights key", name, ESTIMATORS)
    for name in ("num_tasks", "num_steps", "truncation_length", "horizon", "grad_accum",
                 "log_every", "checkpoint_every", "keep_checkpoints"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.sigma <= 0:
      raise ValueError(f"sigma must be positive, got {self.sigma}.")

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """Hash of everything that changes the numbers (run bookkeeping excluded), used
    to refuse resuming a checkpoint written by a different config."""
    keep = {k: v for k, v in self.to_dict().items() if k not in _BOOKKEEPING}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: Fields that may change between a run and its resume.
_BOOKKEEPING = ("num_steps", "log_every", "checkpoint_every", "keep_checkpoints", "run_dir",
                "wandb_mode", "wandb_project", "name", "eval_every")


def _check_choice(field: str, value: str, known: Sequence[str]) -> None:
  if value not in known:
    raise ValueError(f"Unknown {field} {value!r}; choose one of {tuple(known)}.")


def field_names() -> Tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(MetaTrainConfig))


def from_dict(values: Dict[str, Any], base: Optional[MetaTrainConfig] = None) -> MetaTrainConfig:
  """A config from ``values`` (over ``base`` or the defaults); unknown keys fail."""
  base = base or MetaTrainConfig()
  known = field_names()
  for key in values:
    if key not in known:
      close = difflib.get_close_matches(key, known, n=3)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise ValueError(f"Unknown meta-training config key {key!r}.{hint} "
                       f"Valid keys: {', '.join(known)}.")
  types = {f.name: f.type for f in dataclasses.fields(MetaTrainConfig)}
  checked = {k: _coerce(k, v, types[k]) for k, v in values.items()}
  return dataclasses.replace(base, **checked)


def _coerce(key: str, value: Any, type_name: str) -> Any:
  expected = {"int": int, "float": float, "str": str, "bool": bool}.get(type_name)
  if expected is None:  # Dict fields.
    if not isinstance(value, dict):
      raise ValueError(f"Config key {key!r} expects a dict, got {value!r}.")
    return value
  if expected is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
    raise ValueError(f"Config key {key!r} expects {type_name}, got {value!r} "
                     f"({type(value).__name__}).")
  return value


def parse_override(text: str) -> Tuple[str, Any]:
  """``"key=value"`` -> ``(key, value)``; the value is a Python literal when it
  parses as one (``3``, ``1e-3``, ``True``, ``{'a': 1}``), else a string.
  Dotted keys set one field of a dict field: ``lopt_config.hidden_sizes=(16,16)``."""
  if "=" not in text:
    raise ValueError(f"Override {text!r} must look like key=value.")
  key, raw = text.split("=", 1)
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  return key.strip(), value


def apply_overrides(config: MetaTrainConfig, overrides: Sequence[str]) -> MetaTrainConfig:
  values: Dict[str, Any] = {}
  for text in overrides:
    key, value = parse_override(text)
    if "." in key:
      top, sub = key.split(".", 1)
      current = dict(values.get(top, getattr(config, top, None) or {}))
      if not isinstance(getattr(config, top, None), dict):
        raise ValueError(f"{top!r} is not a dict config field; cannot set {key!r}.")
      current[sub] = value
      values[top] = current
    else:
      values[key] = value
  return from_dict(values, config)


def load_config(path: str, overrides: Sequence[str] = (), variant: Optional[str] = None
                ) -> MetaTrainConfig:
  """Imports ``path`` (a ``.py`` file defining ``get_config``) and applies overrides.

  ``path`` may end with ``:variant`` (e.g. ``configs/mlp_digits.py:pod``).
  """
  if variant is None and ":" in os.path.basename(path):
    path, variant = path.rsplit(":", 1)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Config file {path!r} does not exist.")
  spec = importlib.util.spec_from_file_location("metaopt_user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"Config file {path!r} must define get_config().")
  config = module.get_config(variant) if variant is not None else module.get_config()
  if isinstance(config, dict):
    config = from_dict(config)
  if not isinstance(config, MetaTrainConfig):
    raise TypeError(f"{path}: get_config() returned {type(config).__name__}, "
                    f"expected MetaTrainConfig or a dict.")
  return apply_overrides(config, overrides)
