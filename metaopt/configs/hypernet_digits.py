"""VeLO-style hypernetwork (``hypernet``: a per-tensor LSTM emitting the weights of a
tiny per-parameter MLP) on the MLP 64-32-32-10 digits family, meta-trained with PES.

Variants: ``cpu`` (the default; minutes on a 2-core CPU) and ``pod`` (many devices),
sized by the shared presets of ``metaopt.meta.presets``; this file states only what is
particular to the experiment. Run ``metaopt meta-train configs/hypernet_digits.py[:pod]
[--set key=value ...]`` (e.g. ``--set estimator.sigma=0.02``).
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {"family": "mlp_digits_w32_d2_family", "lopt": "hypernet"}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("hypernet_digits", variant, COMMON)
