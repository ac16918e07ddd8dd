"""Leaderboard entrants: hand-designed baselines and learned optimizers.

An ``Entrant`` is what a row of the leaderboard stands for: an optimizer under a
ruleset (AlgoPerf):

* ``tuned`` (external tuning): a hand-designed baseline gets studies of
  quasi-random trials over its search space (``metaopt.eval.protocol``).
* ``self_tuning``: one fixed config for every task. Learned optimizers, baselines
  whose spec says ``self_tuning`` (schedule-free, Prodigy) and ``NAME@defaults``.

Spec strings accepted by ``parse``: ``adam`` (a baseline; its ruleset follows its
spec), ``adam@defaults`` (a baseline at its defaults, self-tuning), and a learned
optimizer by shipped name or ``.safetensors`` path (optionally prefixed ``lopt:``).

An entrant builds its optax transformation with ``build(hparams, aux, task,
steps)``: ``hparams`` holds the float hyper-parameters, which may be tracers (one
compiled program serves a whole learning-rate sweep); ``aux`` is the learned
optimizer's meta-parameters theta, passed as an argument (never captured).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tasks as task_registry
from metaopt import optimizers
from metaopt.lopt import io
from tasks.registry import unknown_name_message

RULESETS = ("tuned", "self_tuning")


@dataclasses.dataclass(frozen=True)
class Entrant:
  """One optimizer under one ruleset.

  Attributes:
    name: unique label (database key and table row), e.g. ``adam``,
      ``adam@defaults``, ``mlp-v1``.
    kind: ``baseline`` or ``learned``.
    ruleset: one of ``RULESETS``.
    source: baseline registry name, or the learned optimizer's name/path.
    trained_on: task families a learned optimizer was meta-trained on.
    trained_on_synthetic_architectures: the architecture classes of its meta-training
      families with generated data (leakage on generated tasks).
    trained_on_datasets, trained_on_architectures: the datasets and architecture
      classes (``tasks.ARCHITECTURES``) of its meta-training tasks (leakage guard).
    meta_cost_hours: meta-training cost in device-hours (learned), else None.
    description: one line for reports.
    lopt, theta: a learned optimizer object and its meta-parameters (learned only).
    fingerprint: content hash of the learned optimizer's weights (stored in the
      run config so a retrained file is never confused with the old one).
  """
  name: str
  kind: str
  ruleset: str
  source: str
  trained_on: Tuple[str, ...] = ()
  meta_cost_hours: Optional[float] = None
  description: str = ""
  lopt: Any = dataclasses.field(default=None, compare=False, repr=False)
  theta: Any = dataclasses.field(default=None, compare=False, repr=False)
  fingerprint: str = ""
  trained_on_datasets: Tuple[str, ...] = ()
  trained_on_architectures: Tuple[str, ...] = ()
  trained_on_synthetic_architectures: Tuple[str, ...] = ()

  def __post_init__(self):
    if self.kind not in ("baseline", "learned"):
      raise ValueError(f"Entrant.kind must be 'baseline' or 'learned', got {self.kind!r}.")
    if self.ruleset not in RULESETS:
      raise ValueError(f"Entrant.ruleset {self.ruleset!r} is not one of {RULESETS}.")

  @property
  def tuned(self) -> bool:
    return self.ruleset == "tuned"

  def fixed_config(self, steps: int) -> Dict[str, Any]:
    """The single config of a self-tuning entrant (stored with each run)."""
    if self.kind == "learned":
      return {"lopt": self.source, "fingerprint": self.fingerprint, "num_steps": int(steps)}
    return dict(optimizers.spec(self.source).defaults)

  def split_config(self, config: Dict[str, Any]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """``(float hyper-parameters that may be traced, everything else)``."""
    if self.kind == "learned":
      return {}, dict(config)
    numeric = {k: float(v) for k, v in config.items()
               if isinstance(v, float) and not isinstance(v, bool)}
    decay = config.get("lr_decay")
    if isinstance(decay, str) and decay in optimizers.DECAYS:
      # The decay type becomes a traced index (``build``), so that the trials of
      # every decay share one compiled program.
      numeric["lr_decay"] = float(optimizers.DECAYS.index(decay))
    static = {k: v for k, v in config.items() if k not in numeric}
    return numeric, static

  def aux(self):
    """Arguments passed to ``build`` alongside the hyper-parameters (theta or None)."""
    return self.theta

  def build(self, hparams: Dict[str, Any], static: Dict[str, Any], aux: Any,
            param_info: Any = None, total_steps: Optional[int] = None
            ) -> optax.GradientTransformation:
    """The optax transformation for one run (``hparams`` may be tracers).

    ``total_steps`` is the run's budget: a learning-rate schedule (a config's
    ``schedule`` key, or the baseline's own schedule hyper-parameters) spans it.
    A ``schedule`` in the config is applied as ``learning_rate * unit_schedule(t)``
    so that a traced learning rate works with every optax schedule.
    """
    if self.kind == "learned":
      return self.lopt.transform(aux, num_steps=static.get("num_steps"), param_info=param_info)
    cfg = dict(static, **hparams)
    if "lr_decay" in hparams and not isinstance(hparams["lr_decay"], str):
      cfg["learning_rate"] = _traced_decay_schedule(
          cfg.pop("learning_rate"), total_steps, cfg.pop("warmup_fraction"),
          cfg.pop("lr_decay"))
      return optimizers.get(self.source, schedule="constant", total_steps=total_steps, **cfg)
    schedule = cfg.pop("schedule", "constant")
    if schedule != "constant":
      unit = optimizers.make_schedule(1.0, schedule, total_steps)
      lr = cfg["learning_rate"]
      cfg["learning_rate"] = lambda count: lr * unit(count)
    if total_steps is None:
      return optimizers.get(self.source, **cfg)
    return optimizers.get(self.source, total_steps=total_steps, **cfg)


def _traced_decay_schedule(learning_rate, total_steps, warmup_fraction, decay_index):
  """``optimizers.warmup_decay_schedule`` with the decay chosen by a (traced) index
  into ``optimizers.DECAYS``."""
  options = [optimizers.warmup_decay_schedule(learning_rate, total_steps, warmup_fraction, d)
             for d in optimizers.DECAYS]

  def schedule(count):
    values = jnp.stack([f(count) for f in options])
    return values[jnp.asarray(decay_index, jnp.int32)]

  return schedule


def baseline(name: str, defaults_only: bool = False) -> Entrant:
  """A baseline entrant; tuned unless its spec is self-tuning or ``defaults_only``."""
  spec = optimizers.spec(name)  # Unknown names raise listing the known ones.
  self_tuning = defaults_only or spec.self_tuning
  label = f"{name}@defaults" if defaults_only and not spec.self_tuning else name
  return Entrant(name=label, kind="baseline", ruleset="self_tuning" if self_tuning else "tuned",
                 source=name, description=spec.description)


def learned(name: str, lopt, theta, metadata: Optional[Dict[str, Any]] = None,
            source: Optional[str] = None) -> Entrant:
  """A learned-optimizer entrant from an in-memory ``(lopt, theta, metadata)``."""
  metadata = dict(metadata or {})
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(theta):
    h.update(np.asarray(leaf).tobytes())
  # metaopt.lopt.io writes "meta_training_device_hours"; accept the older spelling too.
  cost = metadata.get("meta_training_device_hours", metadata.get("meta_training_cost_hours"))
  trained_on = _strings(metadata.get("trained_on"))
  families = tuple(dict.fromkeys(trained_on + _strings(metadata.get("trained_on_families"))))
  datasets, architectures, synthetic = derived_training_classes(families)
  datasets = tuple(dict.fromkeys(_strings(metadata.get("trained_on_datasets")) + datasets))
  architectures = tuple(dict.fromkeys(_strings(metadata.get("trained_on_architectures"))
                                      + architectures))
  return Entrant(name=name, kind="learned", ruleset="self_tuning", source=source or name,
                 trained_on=families, trained_on_datasets=datasets,
                 trained_on_architectures=architectures,
                 trained_on_synthetic_architectures=synthetic,
                 meta_cost_hours=None if cost is None else float(cost),
                 description=str(metadata.get("description", f"learned ({lopt.arch})")),
                 lopt=lopt, theta=theta, fingerprint=h.hexdigest()[:16])


def _strings(x) -> Tuple[str, ...]:
  if not x:
    return ()
  return (str(x),) if isinstance(x, str) else tuple(str(v) for v in x)


def derived_training_classes(families) -> Tuple[Tuple[str, ...], ...]:
  """``(datasets, architectures, architectures of generated data)`` of registered
  task families (or task names) from their ``metadata``; unknown names contribute
  nothing."""
  datasets, archs, synthetic = [], [], []
  for f in families:
    meta = {}
    if f in task_registry.family_names():
      meta = dict(getattr(task_registry.get_family(f), "metadata", {}) or {})
    if meta.get("dataset"):
      datasets.append(str(meta["dataset"]))
    if meta.get("architecture"):
      archs.append(str(meta["architecture"]))
      if meta.get("dataset") == task_registry.SYNTHETIC:
        synthetic.append(str(meta["architecture"]))
  return tuple(tuple(dict.fromkeys(x)) for x in (datasets, archs, synthetic))


def parse(spec: str) -> Entrant:
  """An entrant from a command-line spec (see module docstring)."""
  spec = spec.strip()
  if spec.endswith("@defaults"):
    return baseline(spec[:-len("@defaults")], defaults_only=True)
  lopt_spec = spec[len("lopt:"):] if spec.startswith("lopt:") else spec
  if not spec.startswith("lopt:") and spec in optimizers.names():
    return baseline(spec)
  looks_learned = (spec.startswith("lopt:") or os.path.exists(lopt_spec)
                   or lopt_spec.endswith(".safetensors"))
  try:
    lopt, theta, metadata = io.load_meta_params(lopt_spec)
  except (KeyError, FileNotFoundError, ValueError) as e:
    if looks_learned:
      raise
    raise ValueError(
        f"{unknown_name_message('optimizer', spec, optimizers.names())} Not a learned "
        f"optimizer either ({e}). Use NAME, NAME@defaults, a shipped learned optimizer "
        "name or a .safetensors path.") from e
  label = os.path.splitext(os.path.basename(lopt_spec))[0]
  return learned(label, lopt, theta, metadata, source=lopt_spec)


def all_baselines() -> List[str]:
  return list(optimizers.names())


#: Baselines entered at their published defaults too (the self-tuning field).
AT_DEFAULTS = ("schedule_free_adamw",)


def shipped_learned() -> List[str]:
  """Names of the learned optimizers shipped in ``metaopt/pretrained``."""
  return list(io.pretrained_names())


def default_entrants() -> List[str]:
  """Every registry baseline (schedule-free AdamW also at its published defaults, a
  self-tuning entrant) and every shipped learned optimizer, as entrant specs."""
  return (all_baselines() + [f"{n}@defaults" for n in AT_DEFAULTS]
          + [f"lopt:{n}" for n in shipped_learned()])


def leakage(entrant: Entrant, task_name: str, task_families: Tuple[str, ...],
            task_metadata: Optional[Dict[str, Any]] = None) -> List[str]:
  """What ``entrant``'s meta-training shares with a held-out task (empty: nothing).

  * **Family**: a family it meta-trained on is the task's name, one of the suite's
    declared ``families`` of the task, the task's ``metadata["family"]``, or its name
    without a ``_family`` suffix is a prefix of the task's name
    (``mlp_digits_family`` vs ``mlp_digits_w128_d2``).
  * **Dataset**: the task's real dataset is one it meta-trained on. Generated data
    (``tasks.SYNTHETIC``) is identified by its class: a generated task overlaps an
    entrant meta-trained on generated problems of the task's architecture class
    (``quadratic_noisy_family`` vs ``quadratic_d100_cond10000``).

  The architecture class of a task on real data is no overlap: a rule meta-trained
  on MLPs may be judged on MLPs of other data (the point of a held-out suite).
  """
  if entrant.kind != "learned":
    return []
  meta = dict(task_metadata or {})
  declared = set(task_families)
  if meta.get("family"):
    declared.add(str(meta["family"]))
  hits = []
  for f in entrant.trained_on:
    stem = f[:-len("_family")] if f.endswith("_family") else f
    if f == task_name or f in declared or task_name.startswith(stem):
      hits.append(f"family {f}")
  dataset, arch = meta.get("dataset"), meta.get("architecture")
  if dataset and dataset != task_registry.SYNTHETIC and dataset in entrant.trained_on_datasets:
    hits.append(f"dataset {dataset}")
  if (dataset == task_registry.SYNTHETIC and arch
      and arch in entrant.trained_on_synthetic_architectures):
    hits.append(f"generated {arch} problems")
  return hits


def ineligibility(entrant: Entrant, suite, task_metadata: Dict[str, Dict[str, Any]]
                  ) -> Dict[str, List[str]]:
  """Why ``entrant`` may not enter ``suite`` (empty: eligible): ``{task: overlaps}``
  for every suite task it overlaps (``leakage``). One overlap makes the whole
  entrant ineligible: it is listed apart with the reasons, never rescored on the
  remaining tasks (that would score entrants on different task sets)."""
  out = {}
  for st in suite.tasks:
    hits = leakage(entrant, st.task, st.families, task_metadata.get(st.task))
    if hits:
      out[st.task] = hits
  return out
