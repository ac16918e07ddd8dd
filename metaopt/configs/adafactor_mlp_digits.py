"""Adafactor-feature per-parameter MLP (``adafactor_mlp``, hidden 4x2) on the MLP
64-32-32-10 digits family, meta-trained with PES.

Variants: ``cpu`` (the default; minutes on a 2-core CPU) and ``pod`` (many devices),
sized by the shared presets of ``metaopt.meta.presets``; this file states only what is
particular to the experiment. Run ``metaopt meta-train configs/adafactor_mlp_digits.py[:pod]
[--set key=value ...]`` (e.g. ``--set estimator.sigma=0.02``).
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {"family": "mlp_digits_w32_d2_family", "lopt": "adafactor_mlp"}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("adafactor_mlp_digits", variant, COMMON)
