"""Fully amortized LASSO: an MLP maps y to the LASSO solution (objective-based),
FISTA fine-tuning at evaluation."""

from metaopt.amortized.amortize import AmortizedConfig
from metaopt.amortized.experiment import EvalConfig, ExperimentConfig, check_variant


def get_config(variant: str = "cpu") -> ExperimentConfig:
  check_variant(variant)  # One size: 'cpu'.
  return ExperimentConfig(
      method="amortized", problem="lasso_m64_n128_p0.1_snr40",
      train=AmortizedConfig(loss="objective", solver="fista", hidden=(512, 512), steps=3000),
      eval=EvalConfig(iters=50, num_test=256))
