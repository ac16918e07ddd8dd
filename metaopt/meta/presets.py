"""Run sizes shared by every ``configs/*.py`` meta-training experiment.

A preset is a partial config in ``--set`` form (dotted keys): ``cpu`` (minutes on a
2-core CPU), ``demo`` (the short run of ``metaopt demo``) and ``pod`` (many devices:
more tasks in flight, longer and log-uniform horizons, warm-up + cosine outer lr).
An experiment file states only what is particular to it::

  def get_config(variant="cpu"):
    return presets.experiment(
        "lstm_quadratic", variant,
        {"family": "quadratic_family", "lopt": "lstm", "estimator.name": "tbptt"},
        changes={"cpu": {"schedule.horizon": 100}})

Held-out evaluation runs as long as training runs: ``eval.horizon`` follows
``schedule.horizon`` unless stated.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from metaopt import typed_config
from metaopt.meta.config import MetaTrainConfig

CPU: Dict[str, Any] = {
    "estimator.num_tasks": 8, "schedule.truncation_length": 20, "schedule.horizon": 200,
    "outer.num_steps": 600, "outer.lr": 3e-3,
    "eval.every": 100, "eval.tasks": 4, "run.log_every": 10, "run.checkpoint_every": 100,
}
# `metaopt demo`: the mlp optimizer beats Adam 1e-3 on held-out tasks after ~100 steps.
DEMO: Dict[str, Any] = {**CPU, "outer.num_steps": 300, "eval.every": 50,
                        "run.checkpoint_every": 50}
POD: Dict[str, Any] = {
    "estimator.num_tasks": 256, "schedule.truncation_length": 50, "schedule.horizon": 2000,
    "schedule.name": "loguniform", "schedule.min_horizon": 200,
    "outer.num_steps": 5000, "outer.lr": 1e-3, "outer.lr_schedule": "warmup_cosine",
    "outer.warmup_steps": 200,
    "eval.every": 250, "eval.tasks": 16, "run.log_every": 10, "run.checkpoint_every": 250,
}
PRESETS: Dict[str, Dict[str, Any]] = {"cpu": CPU, "demo": DEMO, "pod": POD}

#: The task mixture of the shipped general-purpose optimizers (configs/general_v*.py):
#: MLPs on generated teacher data (one globally reparameterized), a char-level
#: transformer, LASSO and L1-regularized logistic regression.
GENERAL_FAMILIES = (
    "mlp_teacher_w64_family",
    "mlp_teacher_w128_family+reparam_global",
    "transformer_text_tiny_family",
    "lasso_m64_n128_p0.1_noiseless",
    "l1_logreg_d50_n100_lam0.05",
)

# The recipe of the shipped general-purpose optimizers (configs/general*.py): the
# `general` architecture, PES over log-uniform horizons of 100-2,000 steps, validation
# meta-loss, the best held-out evaluation kept.
GENERALIZATION: Dict[str, Any] = {
    "lopt": "general", "estimator.name": "pes",
    "schedule.name": "loguniform", "schedule.truncation_length": 50,
    "schedule.min_horizon": 100, "schedule.horizon": 2000,
    "outer.lr_schedule": "warmup_cosine", "outer.warmup_steps": 50,
    "estimator.meta_loss": "valid", "eval.horizon": 500, "eval.tasks": 2,
    "eval.keep_best": True,
}


def generalization_sizes(cpu_steps: int) -> Dict[str, Dict[str, Any]]:
  """``changes`` per variant for a ``GENERALIZATION`` experiment: 4 tasks per family and
  ``cpu_steps`` outer steps on a CPU, 64 tasks and 5,000 steps on a pod."""
  return {"cpu": {"estimator.num_tasks": 4, "outer.num_steps": cpu_steps, "outer.lr": 1e-3,
                  "eval.every": 100, "run.checkpoint_every": 50},
          "pod": {"estimator.num_tasks": 64, "outer.num_steps": 5000, "outer.lr": 1e-3}}


def experiment(name: str, variant: str, common: Mapping[str, Any],
               changes: Optional[Mapping[str, Mapping[str, Any]]] = None,
               variants: Sequence[str] = ("cpu", "pod")) -> MetaTrainConfig:
  """The ``variant`` of experiment ``name``: the defaults, then the preset, then
  ``common`` (keys of every variant: ``family``, ``lopt``, dotted ``estimator.name``...),
  then ``changes[variant]``. ``run.name`` / ``run.run_dir`` are ``<name>_<variant>`` /
  ``runs/<name>_<variant>``. ``variants``: the presets this experiment offers."""
  if variant not in variants:
    raise ValueError(f"Unknown variant {variant!r} of {name}; choose one of {sorted(variants)}.")
  values = {"run.name": f"{name}_{variant}", "run.run_dir": f"runs/{name}_{variant}",
            **PRESETS[variant], **common, **dict((changes or {}).get(variant, {}))}
  values.setdefault("eval.horizon", values["schedule.horizon"])
  return typed_config.replace(MetaTrainConfig(), values)
