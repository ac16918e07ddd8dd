"""Per-parameter MLP learned optimizer (``mlp``, small_fc style) on the MLP 64-32-32-10
digits family, meta-trained with PES.

Variants: ``cpu`` (the default; minutes on a 2-core CPU), ``demo`` (the short run of
``metaopt demo``, 300 outer steps) and ``pod`` (many devices: more tasks in flight,
longer horizons), sized by the shared presets of ``metaopt.meta.presets``. Use
``metaopt meta-train configs/mlp_digits.py:pod``; any field can be overridden with
``--set key=value`` (e.g. ``--set estimator.sigma=0.02``).
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {"family": "mlp_digits_w32_d2_family", "lopt": "mlp"}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("mlp_digits", variant, COMMON, variants=("cpu", "demo", "pod"))
