"""``general-mup-v1``: the ``general`` learned optimizer with μP step multipliers
(``lopt_config.mup=True``), meta-trained with PES on μP MLPs of widths 32, 64 and 128
on generated teacher data, so that one θ transfers as the width grows (μLO, Thérien
et al. 2024). Users pass ``param_info`` (``metaopt.lopt.mulo.mlp_param_info``).

Reproduce the shipped file (resumable: rerun the same command)::

  metaopt meta-train configs/general_mup_v1.py --set run.name=general-mup-v1
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

FAMILIES = tuple(f"mlp_teacher_mup_w{w}_family" for w in (32, 64, 128))

COMMON = {
    "family": ",".join(FAMILIES), "lopt": "general", "lopt_config": {"mup": True},
    "estimator.name": "pes", "schedule.name": "loguniform",
    "schedule.truncation_length": 50, "schedule.min_horizon": 100, "schedule.horizon": 2000,
    "outer.lr_schedule": "warmup_cosine", "outer.warmup_steps": 50,
    "estimator.meta_loss": "valid", "eval.horizon": 500, "eval.tasks": 2,
    "eval.keep_best": True,
}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("general_mup_v1", variant, COMMON, changes={
      "cpu": {"estimator.num_tasks": 4, "outer.num_steps": 800, "outer.lr": 1e-3,
              "eval.every": 100, "run.checkpoint_every": 50},
      "pod": {"estimator.num_tasks": 64, "outer.num_steps": 5000, "outer.lr": 1e-3},
  })
