"""Amortized entropic OT (Meta OT): an MLP predicts the dual potential from the two
histograms and warm-starts Sinkhorn."""

from metaopt.amortized.amortize import AmortizedConfig
from metaopt.amortized.experiment import EvalConfig, ExperimentConfig, check_variant


def get_config(variant: str = "cpu") -> ExperimentConfig:
  check_variant(variant)  # One size: 'cpu'.
  return ExperimentConfig(
      method="amortized", problem="entropic_ot_n32_eps0.01",
      train=AmortizedConfig(loss="objective", solver="native", hidden=(256, 256), steps=2000),
      eval=EvalConfig(iters=50, num_test=256))
