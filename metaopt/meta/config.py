"""Meta-training configuration: nested frozen dataclasses, each validated once.

A run is a ``MetaTrainConfig``: the task family, the learned-optimizer architecture
(and its config), the seed, and one section per concern::

  MetaTrainConfig
    family, lopt, lopt_config, seed
    schedule:  ScheduleConfig   truncations and inner-run horizons
    estimator: EstimatorConfig  meta-gradient estimator, in-flight tasks, meta-loss
    outer:     OuterConfig      optax optimizer on theta, clipping, outer steps
    eval:      EvalConfig       periodic held-out evaluation against Adam
    run:       RunConfig        bookkeeping: name, directory, logging, checkpoints

Every section checks its own fields in ``__post_init__`` (so a config file, a
``--set`` override and ``--print-config`` all reject the same bad values).

A config file ``configs/<experiment>.py`` defines ``get_config(variant=...)``;
``load_config("configs/x.py:pod", ["estimator.sigma=0.02"])`` executes it (trusted
Python only) and applies typed overrides (``metaopt.typed_config``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import tasks as task_registry
from tasks.base import TaskFamily
from metaopt import lopt as lopt_lib
from metaopt import typed_config
from metaopt.meta.estimators import ESTIMATORS, FULL_ES_LOSSES
from metaopt.meta.truncation import TruncationSchedule
from metaopt.meta.unroll import META_LOSSES

OUTER_OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")
GRAD_CLIPS = ("value", "global_norm", "none")
WANDB_MODES = ("offline", "online", "disabled")


def _check_choice(field: str, value: str, known: Sequence[str]) -> None:
  if value not in known:
    raise ValueError(f"Unknown {field} {value!r}; choose one of {tuple(known)}.")


def _check_at_least(section: str, obj: Any, names: Sequence[str], low: int) -> None:
  for name in names:
    if getattr(obj, name) < low:
      raise ValueError(f"{section}.{name} must be >= {low}, got {getattr(obj, name)}.")


def _check_positive(key: str, value: float) -> None:
  if not (math.isfinite(value) and value > 0):
    raise ValueError(f"{key} must be finite and > 0, got {value}.")


#: The ``schedule`` section is the truncation schedule itself.
ScheduleConfig = TruncationSchedule


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
  """The meta-gradient estimate of one outer step.

  Attributes:
    name: one of ``ESTIMATORS``, or ``"mix"`` with ``mix_weights``.
    mix_weights: ``{estimator: weight}`` for ``"mix"``.
    num_tasks: in-flight inner tasks (sharded over devices; divisible by their count).
    sigma: ES/PES perturbation std.
    full_es_loss: ``avg``, ``min`` or ``last`` (full-unroll ES only).
    meta_loss: ``train`` (mean over truncation), ``final`` or ``valid``.
  """
  name: str = "pes"
  mix_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
  num_tasks: int = 8
  sigma: float = 0.01
  full_es_loss: str = "avg"
  meta_loss: str = "train"

  def __post_init__(self):
    _check_choice("estimator.name", self.name, ESTIMATORS + ("mix",))
    _check_choice("estimator.meta_loss", self.meta_loss, META_LOSSES)
    _check_choice("estimator.full_es_loss", self.full_es_loss, FULL_ES_LOSSES)
    if self.name == "mix" and not self.mix_weights:
      raise ValueError("estimator.name='mix' needs estimator.mix_weights, "
                       "e.g. {'pes': 0.5, 'tbptt': 0.5}.")
    for name, weight in self.mix_weights.items():
      _check_choice("estimator.mix_weights key", name, ESTIMATORS)
      _check_positive(f"estimator.mix_weights[{name!r}]", weight)
    _check_at_least("estimator", self, ("num_tasks",), 1)
    _check_positive("estimator.sigma", self.sigma)


@dataclasses.dataclass(frozen=True)
class OuterConfig:
  """The outer (meta) optimizer on theta.

  Attributes:
    optimizer: optax optimizer (``OUTER_OPTIMIZERS``).
    lr: its peak learning rate.
    lr_schedule: ``constant``, ``cosine`` (decay over ``num_steps``) or
      ``warmup_cosine`` (linear warm-up over ``warmup_steps``, then cosine).
    warmup_steps: warm-up length of ``warmup_cosine``.
    grad_clip: ``value`` (elementwise, as learned_optimization), ``global_norm`` or
      ``none``: clipping of the meta-gradient before the optimizer.
    clip_value: the clipping threshold.
    grad_accum: meta-gradient estimates averaged per outer update.
    num_steps: outer steps of the run.
    resample_every: restart every in-flight task every this many outer steps (0: only
      when runs reach their horizon).
    small_leaf_lr_multiplier: learning-rate multiplier of the θ leaves with at most
      ``SMALL_LEAF_SIZE`` entries (an initial log step size, a gain, per-kind scales).
      Adam moves every entry by about ``lr`` per step whatever its role, so at a rate
      right for network weights a log step size can move by only ~0.6 in 600 steps
      (a factor 1.8): the meta-gradient cannot set it. 1 leaves them at ``lr``.
  """
  optimizer: str = "adam"
  lr: float = 1e-3
  lr_schedule: str = "constant"
  warmup_steps: int = 0
  grad_clip: str = "value"
  clip_value: float = 3.0
  grad_accum: int = 1
  num_steps: int = 1000
  resample_every: int = 0
  small_leaf_lr_multiplier: float = 1.0

  def __post_init__(self):
    _check_choice("outer.optimizer", self.optimizer, OUTER_OPTIMIZERS)
    _check_positive("outer.small_leaf_lr_multiplier", self.small_leaf_lr_multiplier)
    _check_choice("outer.lr_schedule", self.lr_schedule, LR_SCHEDULES)
    _check_choice("outer.grad_clip", self.grad_clip, GRAD_CLIPS)
    _check_positive("outer.lr", self.lr)
    _check_positive("outer.clip_value", self.clip_value)
    _check_at_least("outer", self, ("grad_accum", "num_steps"), 1)
    _check_at_least("outer", self, ("warmup_steps", "resample_every"), 0)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Held-out evaluation during meta-training.

  Attributes:
    every: evaluate theta every this many outer steps (0: never) and at the end.
    tasks: held-out tasks (a fixed key) trained ...
    horizon: ... for this many inner steps, with theta and with Adam tuned over a
      learning-rate grid; each run then reports its validation loss.
    adam_lr: the centre of Adam's grid.
    adam_grid: points of the grid: ``adam_lr * 10 ** linspace(-1, 1, adam_grid)``
      (half-decades for 5); per family the rate with the lowest mean validation loss
      is the baseline (the grid's edges are logged when chosen: widen it).
    keep_best: also export the theta of the evaluation with the lowest
      ``eval/lopt_valid_ratio`` (its validation loss over tuned Adam's, averaged over
      families) so far as ``<run.name>.best.safetensors`` (model selection on held-out
      tasks of the meta-training families, on what a user will see: PES can make a
      learned optimizer worse late in a run).
  """
  every: int = 100
  tasks: int = 4
  horizon: int = 200
  adam_lr: float = 1e-3
  adam_grid: int = 5
  keep_best: bool = False

  def __post_init__(self):
    _check_at_least("eval", self, ("every",), 0)
    _check_at_least("eval", self, ("tasks", "horizon"), 1)
    _check_positive("eval.adam_lr", self.adam_lr)
    _check_at_least("eval", self, ("adam_grid",), 1)


def _check_run_name(name: str) -> None:
  """A run name is a file name inside the run directory: no separator, no ``..``."""
  if (not name or name in (".", "..") or "/" in name or os.sep in name
      or (os.altsep and os.altsep in name) or "\0" in name):
    raise ValueError(f"run.name={name!r} is not a plain file name (it names the exported "
                     f"<run.name>.safetensors inside run.run_dir, and must not contain a "
                     f"path separator or be '.' or '..'); choose a name like 'mlp_v2' and "
                     f"set the directory with run.run_dir.")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Bookkeeping: may change between a run and its resume (not in ``fingerprint()``).

  Attributes:
    name: run name (progress bar, wandb, exported ``<name>.safetensors``).
    run_dir: output directory (metrics, curves, checkpoints, exported theta).
    log_every: metrics window / progress refresh (outer steps).
    checkpoint_every / keep_checkpoints: checkpoint period and how many to keep.
    wandb_mode / wandb_project: wandb settings (offline by default).
    max_skipped_steps: stop with an error (nothing exported) once this many
      consecutive outer updates were skipped (no valid inner run, or a non-finite
      meta-gradient); checked at logging steps.
    allow_sealed: meta-train on data a leaderboard suite holds out (``tasks.sealed``);
      refused by default. The export records the sealed items used, and the
      leaderboard then lists the weights as ineligible for that suite.
    accept_changes: resume a checkpoint even though its recorded configuration
      (``MetaTrainConfig.resolved``) or package version differs from this run's; the
      differences are printed as a warning and the run mixes the two setups. Off by
      default: such a resume is refused with the differing fields.
  """
  name: str = "meta_train"
  run_dir: str = "runs/meta_train"
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 3
  wandb_mode: str = "offline"
  wandb_project: str = "metaopt"
  max_skipped_steps: int = 20
  accept_changes: bool = False
  allow_sealed: bool = False

  def __post_init__(self):
    _check_run_name(self.name)
    _check_at_least("run", self, ("log_every", "checkpoint_every", "keep_checkpoints",
                                  "max_skipped_steps"), 1)
    _check_choice("run.wandb_mode", self.wandb_mode, WANDB_MODES)


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """Everything that defines a meta-training run (same config + seed = same numbers).

  Attributes:
    family: task family registry name (``tasks.family_names()``), or a mixture of
      families joined by commas (``"a_family,b_family"``): each member has its own
      in-flight tasks (``estimator.num_tasks`` each) and the meta-gradient is the mean
      of the members' estimates. Or a ``tasks.TaskFamily`` object (your own model,
      e.g. from ``tasks.from_haiku_family``), recorded by ``family_name``.
    family_name: the name recorded in checkpoints, metrics and the export's
      ``trained_on`` for a family object (default: the object's ``name``); must be
      empty or equal to ``family`` for a registry name.
    lopt: learned-optimizer architecture (``metaopt.lopt.arch_names()``).
    lopt_config: fields of that architecture's config dataclass (checked against it).
    seed: the one seed of the run.
    schedule / estimator / outer / eval / run: the sections above.
  """
  family: Union[str, TaskFamily] = "mlp_digits_w32_d2_family"
  family_name: str = ""
  lopt: str = "mlp"
  lopt_config: Dict[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0
  schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
  estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
  outer: OuterConfig = dataclasses.field(default_factory=OuterConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  run: RunConfig = dataclasses.field(default_factory=RunConfig)

  @property
  def families(self) -> Tuple[str, ...]:
    """The member families' names: ``family`` is one name, a mixture ``"a,b,c"``, or
    an object (then ``family_name``)."""
    if isinstance(self.family, TaskFamily):
      return (self.family_name,)
    return tuple(self.family.split(","))

  @property
  def family_label(self) -> str:
    """``family`` as a string (the recorded name of a family object)."""
    return ",".join(self.families)

  def __post_init__(self):
    if isinstance(self.family, TaskFamily):
      if not self.family_name:
        object.__setattr__(self, "family_name", self.family.name)
      if not self.family_name or "," in self.family_name:
        raise ValueError(f"family_name={self.family_name!r}: a family object needs a "
                         "name without commas (set family_name='my_family').")
    else:
      if self.family_name and self.family_name != self.family:
        raise ValueError(f"family_name={self.family_name!r} names a family object; with the "
                         f"registry name family={self.family!r} leave it empty.")
      self._check_registered()
    if self.lopt not in lopt_lib.arch_names():
      raise ValueError(task_registry.unknown_name_message(
          "learned-optimizer architecture (lopt)", self.lopt, lopt_lib.arch_names()))
    # Fields of the architecture's config, typed like them (JSON lists become tuples).
    arch_config = type(lopt_lib.build(self.lopt).config)
    object.__setattr__(self, "lopt_config", _checked_lopt_config(arch_config, self.lopt_config))

  def _check_registered(self) -> None:
    for name in self.families:
      if name not in task_registry.family_names():
        raise ValueError(task_registry.unknown_name_message(
            "task family", name, task_registry.family_names()))
    if len(set(self.families)) != len(self.families):
      raise ValueError(f"family {self.family!r} names a family twice.")

  def to_dict(self) -> Dict[str, Any]:
    """Nested dict (``from_dict`` reads it back; a family object is written as its
    ``family_name``)."""
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.name == "family":
        value = self.family_label
      out[f.name] = (typed_config.to_dict(value) if dataclasses.is_dataclass(value)
                     else copy.deepcopy(value))
    return out

  def resolved(self, arch_config: Any = None) -> Dict[str, Any]:
    """``{dotted key: value}`` of everything in the config that changes the numbers,
    resolved: the architecture's full config (defaults included, from ``arch_config``
    or built from ``lopt``/``lopt_config``), every estimator, schedule, outer and eval
    field, and ``outer.num_steps`` when it shapes the outer learning-rate schedule.
    Bookkeeping (``run``, ``BOOKKEEPING``) is left out. Checkpoints record it and a
    resume compares it field by field (``differences``)."""
    keep = json.loads(json.dumps(self.to_dict(), default=str))  # Tuples as JSON lists.
    del keep["run"]
    for section, name in BOOKKEEPING:
      del keep[section][name]
    if self.outer.lr_schedule != "constant":  # cosine decays over num_steps.
      keep["outer"]["num_steps"] = self.outer.num_steps
    if arch_config is None:
      arch_config = lopt_lib.build(self.lopt, self.lopt_config).config
    keep["lopt_config"] = json.loads(json.dumps(dataclasses.asdict(arch_config), default=str))
    return flatten(keep)

  def fingerprint(self, arch_config: Any = None) -> str:
    """Hash of ``resolved()`` (fields in ``ADDED_LATER`` left out at their default)."""
    keep = {k: v for k, v in self.resolved(arch_config).items()
            if not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: Fields outside ``run`` that may change between a run and its resume (``num_steps``
#: only while the outer learning rate is constant).
BOOKKEEPING = (("outer", "num_steps"), ("eval", "every"), ("eval", "keep_best"))
#: Resolved keys added after checkpoints were written, with the default that
#: reproduces the older code: a recorded configuration without the key reads as this.
ADDED_LATER = {"outer.small_leaf_lr_multiplier": 1.0, "family_name": ""}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty dict stays a value)."""
  out: Dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, Mapping) and value:
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def differences(recorded: Mapping[str, Any],
                current: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
  """``{key: (recorded value, current value)}`` for every key whose value differs
  (``"(absent)"`` for a key one side lacks; ``ADDED_LATER`` keys default)."""
  recorded = {**{k: v for k, v in ADDED_LATER.items() if k in current}, **recorded}
  out = {}
  for key in sorted(set(recorded) | set(current)):
    old, new = recorded.get(key, "(absent)"), current.get(key, "(absent)")
    if old != new:
      out[key] = (old, new)
  return out
#: θ leaves with at most this many entries count as small (``small_leaf_lr_multiplier``).
SMALL_LEAF_SIZE = 4


def _checked_lopt_config(arch_config: type, values: Mapping[str, Any]) -> Dict[str, Any]:
  """The given fields of ``values`` checked against ``arch_config``'s types."""
  types = typed_config.field_types(arch_config)
  for key in values:
    if key not in types:
      raise typed_config.unknown_key(f"lopt_config.{key}", [f"lopt_config.{n}" for n in types])
  return {k: typed_config.check_value(f"lopt_config.{k}", v, types[k]) for k, v in values.items()}


#: Where each key of the flat (pre-sections) config lives now.
LEGACY_KEYS = {
    "name": ("run", "name"), "run_dir": ("run", "run_dir"), "log_every": ("run", "log_every"),
    "checkpoint_every": ("run", "checkpoint_every"),
    "keep_checkpoints": ("run", "keep_checkpoints"), "wandb_mode": ("run", "wandb_mode"),
    "wandb_project": ("run", "wandb_project"),
    "estimator": ("estimator", "name"), "mix_weights": ("estimator", "mix_weights"),
    "num_tasks": ("estimator", "num_tasks"), "sigma": ("estimator", "sigma"),
    "full_es_loss": ("estimator", "full_es_loss"), "meta_loss": ("estimator", "meta_loss"),
    "schedule": ("schedule", "name"), "truncation_length": ("schedule", "truncation_length"),
    "horizon": ("schedule", "horizon"), "min_horizon": ("schedule", "min_horizon"),
    "random_offsets": ("schedule", "random_offsets"),
    "num_steps": ("outer", "num_steps"), "outer_optimizer": ("outer", "optimizer"),
    "outer_lr": ("outer", "lr"), "lr_schedule": ("outer", "lr_schedule"),
    "warmup_steps": ("outer", "warmup_steps"), "grad_clip": ("outer", "grad_clip"),
    "clip_value": ("outer", "clip_value"), "grad_accum": ("outer", "grad_accum"),
    "resample_every": ("outer", "resample_every"),
    "eval_every": ("eval", "every"), "eval_tasks": ("eval", "tasks"),
    "eval_horizon": ("eval", "horizon"), "eval_adam_lr": ("eval", "adam_lr"),
}


def is_legacy(values: Mapping[str, Any]) -> bool:
  """True for a flat config dict (written before the sections, e.g. in the header of
  ``metaopt/pretrained/mlp-digits-v1.safetensors``)."""
  return isinstance(values.get("estimator"), str) or any(
      k in LEGACY_KEYS and k not in ("estimator", "schedule") for k in values)


def from_legacy(values: Mapping[str, Any]) -> Dict[str, Any]:
  """A flat config dict as a nested one."""
  out: Dict[str, Any] = {}
  for key, value in values.items():
    if key in LEGACY_KEYS:
      section, name = LEGACY_KEYS[key]
      out.setdefault(section, {})[name] = value
    else:
      out[key] = value
  return out


def from_dict(values: Mapping[str, Any], base: Optional[MetaTrainConfig] = None) -> MetaTrainConfig:
  """A config from a nested dict (``to_dict``'s form) or dotted keys
  (``{"estimator.sigma": 0.02}``) over ``base`` or the defaults; a flat pre-sections
  dict is read too. Unknown keys and wrong types fail."""
  if is_legacy(values):
    values = from_legacy(values)
  values = typed_config.nest(values)
  if base is None:
    return typed_config.from_dict(MetaTrainConfig, values)
  return typed_config.replace(base, values)


def apply_overrides(config: MetaTrainConfig, overrides: Sequence[str]) -> MetaTrainConfig:
  """``config`` with ``key=value`` overrides (``estimator.sigma=0.02``,
  ``lopt_config.hidden_sizes=(16,16)``) applied."""
  return typed_config.apply_overrides(config, overrides)


def load_config(path: str, overrides: Sequence[str] = (), variant: Optional[str] = None
                ) -> MetaTrainConfig:
  """Executes config file ``path`` (``configs/x.py`` or ``configs/x.py:variant``;
  trusted Python only), calls its ``get_config`` and applies ``overrides``."""
  return typed_config.load_file(path, MetaTrainConfig, overrides, variant)
