"""ALISTA (analytic W, learned per-layer step and threshold), K=16."""

from metaopt.amortized.experiment import EvalConfig, ExperimentConfig, check_variant
from metaopt.amortized.lista import LISTAConfig


def get_config(variant: str = "cpu") -> ExperimentConfig:
  check_variant(variant)  # One size: 'cpu'.
  return ExperimentConfig(
      method="alista", problem="lasso_m64_n128_p0.1_snr40",
      train=LISTAConfig(num_layers=16),  # The variant's recipe (lista.RECIPES).
      eval=EvalConfig(num_test=1000))
