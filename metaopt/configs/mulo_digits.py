"""μLO (``mulo``): μP-scaled per-parameter MLP on the μP digits MLP family (widths
sampled per run), meta-trained with PES as in Thérien et al. (truncation 50 on pods).

Variants: ``cpu`` (the default; minutes on a 2-core CPU) and ``pod`` (many devices),
sized by the shared presets of ``metaopt.meta.presets``; this file states only what is
particular to the experiment. Run ``metaopt meta-train configs/mulo_digits.py[:pod]
[--set key=value ...]`` (e.g. ``--set estimator.sigma=0.02``).
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {"family": "mlp_digits_mup_family", "lopt": "mulo"}
CHANGES = {
    "pod": {"schedule.horizon": 1000},
}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("mulo_digits", variant, COMMON, CHANGES)
