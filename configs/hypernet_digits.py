"""VeLO-style hypernetwork (``hypernet``: a per-tensor LSTM emitting the weights of a
tiny per-parameter MLP) on the MLP 64-32-32-10 digits family, meta-trained with PES.

Variants: ``cpu`` (the default; minutes on a 2-core CPU) and ``pod`` (many devices).
Run ``metaopt meta-train configs/hypernet_digits.py[:pod] [--set key=value ...]``.
"""

from metaopt.meta.config import MetaTrainConfig


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  base = dict(name=f"hypernet_digits_{variant}", family="mlp_digits_w32_d2_family", lopt="hypernet",
              lopt_config={}, estimator="pes", sigma=0.01,
              meta_loss="train", outer_optimizer="adam", grad_clip="value", clip_value=3.0)
  variants = {
      "cpu": dict(num_tasks=8, truncation_length=20, horizon=200, num_steps=600,
                  outer_lr=0.003, eval_every=100, eval_tasks=4, eval_horizon=200,
                  log_every=10, checkpoint_every=100, run_dir="runs/hypernet_digits_cpu"),
      "pod": dict(num_tasks=256, truncation_length=50, horizon=2000, schedule="loguniform",
                  min_horizon=200, num_steps=5000, outer_lr=0.001, lr_schedule="warmup_cosine",
                  warmup_steps=200, eval_every=250, eval_tasks=16, eval_horizon=2000,
                  log_every=10, checkpoint_every=250, run_dir="runs/hypernet_digits_pod"),
  }
  if variant not in variants:
    raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(variants)}.")
  return MetaTrainConfig(**{**base, **variants[variant]})
