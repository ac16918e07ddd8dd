"""Math-structured L2O rule (``math_l2o``, smooth mode) on random quadratics,
meta-trained with truncated backprop over 20-step truncations of 100-step runs
(the paper's training scheme).

Variants: ``cpu`` (the default; minutes on a 2-core CPU) and ``pod`` (many devices).
Run ``metaopt meta-train configs/math_l2o_quadratic.py[:pod] [--set key=value ...]``.
"""

from metaopt.meta.config import MetaTrainConfig


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  base = dict(name=f"math_l2o_quadratic_{variant}", family="quadratic_family", lopt="math_l2o",
              lopt_config={}, estimator="tbptt", sigma=0.01,
              meta_loss="train", outer_optimizer="adam", grad_clip="value", clip_value=3.0)
  variants = {
      "cpu": dict(num_tasks=8, truncation_length=20, horizon=100, num_steps=500,
                  outer_lr=0.003, eval_every=100, eval_tasks=4, eval_horizon=100,
                  log_every=10, checkpoint_every=100, run_dir="runs/math_l2o_quadratic_cpu"),
      "pod": dict(num_tasks=256, truncation_length=20, horizon=1000, schedule="loguniform",
                  min_horizon=100, num_steps=5000, outer_lr=0.001, lr_schedule="warmup_cosine",
                  warmup_steps=200, eval_every=250, eval_tasks=16, eval_horizon=1000,
                  log_every=10, checkpoint_every=250, run_dir="runs/math_l2o_quadratic_pod"),
  }
  if variant not in variants:
    raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(variants)}.")
  return MetaTrainConfig(**{**base, **variants[variant]})
