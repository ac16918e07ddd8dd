"""Math-structured L2O (arch math_l2o, coordinate-wise LSTM) on ill-conditioned
L1-logistic regression: 100-step unrolls, 20-step truncations; evaluated over 1000
steps (10x) against ISTA and FISTA."""

from metaopt.amortized.experiment import EvalConfig, ExperimentConfig, check_variant
from metaopt.amortized.unroll import UnrollConfig


def get_config(variant: str = "cpu") -> ExperimentConfig:
  check_variant(variant)  # One size: 'cpu'.
  return ExperimentConfig(
      method="math_l2o", problem="l1_logreg_d50_n100_lam0.01_scaled2",
      train=UnrollConfig(horizon=100, truncation=20, meta_steps=200, batch_size=16,
                         learning_rate=3e-3),
      lopt={"net": "lstm", "hidden": 20},
      eval=EvalConfig(factor=10, num_test=128))
