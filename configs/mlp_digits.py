"""Per-parameter MLP learned optimizer (``mlp``, small_fc style) on the MLP 64-32-32-10
digits family, meta-trained with PES.

Variants: ``cpu`` (the default; minutes on a 2-core CPU), ``demo`` (the short run of
``metaopt demo``, 300 outer steps) and ``pod`` (many devices:
more tasks in flight, longer horizons). Use ``metaopt meta-train
configs/mlp_digits.py:pod``; any field can be overridden with ``--set key=value``.
"""

from metaopt.meta.config import MetaTrainConfig


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  base = dict(name=f"mlp_digits_{variant}", family="mlp_digits_w32_d2_family", lopt="mlp",
              estimator="pes", sigma=0.01, meta_loss="train", schedule="constant",
              random_offsets=True, outer_optimizer="adam", grad_clip="value", clip_value=3.0)
  variants = {
      "cpu": dict(num_tasks=8, truncation_length=20, horizon=200, num_steps=600,
                  outer_lr=3e-3, eval_every=100, eval_tasks=4, eval_horizon=200,
                  log_every=10, checkpoint_every=100, run_dir="runs/mlp_digits_cpu"),
      # `metaopt demo`: beats Adam 1e-3 on held-out tasks after ~100 outer steps.
      "demo": dict(num_tasks=8, truncation_length=20, horizon=200, num_steps=300,
                   outer_lr=3e-3, eval_every=50, eval_tasks=4, eval_horizon=200,
                   log_every=10, checkpoint_every=50, run_dir="runs/mlp_digits_demo"),
      "pod": dict(num_tasks=256, truncation_length=50, horizon=2000, schedule="loguniform",
                  min_horizon=200, num_steps=5000, outer_lr=1e-3, lr_schedule="warmup_cosine",
                  warmup_steps=200, eval_every=250, eval_tasks=16, eval_horizon=2000,
                  log_every=10, checkpoint_every=250, run_dir="runs/mlp_digits_pod"),
  }
  if variant not in variants:
    raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(variants)}.")
  return MetaTrainConfig(**{**base, **variants[variant]})
