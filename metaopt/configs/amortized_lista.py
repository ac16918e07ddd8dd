"""LISTA (untied, K=16) on the CPU-sized LASSO problem; `metaopt amortized train
--config configs/amortized_lista.py --out runs/lista`. Use method "lista_cp" or
"alista" for the other variants (``--set method=lista_cp``), problem
"lasso_m250_n500_p0.1_snr40" for the classic size."""

from metaopt.amortized.experiment import EvalConfig, ExperimentConfig, check_variant
from metaopt.amortized.lista import LISTAConfig


def get_config(variant: str = "cpu") -> ExperimentConfig:
  check_variant(variant)  # One size: 'cpu'.
  return ExperimentConfig(
      method="lista", problem="lasso_m64_n128_p0.1_snr40",
      train=LISTAConfig(num_layers=16),  # The variant's recipe (lista.RECIPES).
      eval=EvalConfig(num_test=1000))
