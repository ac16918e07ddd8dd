"""Coordinate-wise LSTM optimizer (``lstm``, Andrychowicz et al. 2016) on random
quadratics, meta-trained with truncated backprop (20-step truncations of 100-step runs).

Variants: ``cpu`` (the default; minutes on a 2-core CPU) and ``pod`` (many devices),
sized by the shared presets of ``metaopt.meta.presets``; this file states only what is
particular to the experiment. Run ``metaopt meta-train configs/lstm_quadratic.py[:pod]
[--set key=value ...]`` (e.g. ``--set estimator.sigma=0.02``).
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {"family": "quadratic_family", "lopt": "lstm", "estimator.name": "tbptt"}
CHANGES = {
    "cpu": {"schedule.horizon": 100, "outer.num_steps": 500},
    "pod": {"schedule.truncation_length": 20, "schedule.horizon": 1000,
            "schedule.min_horizon": 100},
}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("lstm_quadratic", variant, COMMON, CHANGES)
