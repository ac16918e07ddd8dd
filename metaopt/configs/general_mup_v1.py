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

COMMON = {**presets.GENERALIZATION, "lopt_config": {"mup": True}, "family": ",".join(FAMILIES)}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("general_mup_v1", variant, COMMON,
                            changes=presets.generalization_sizes(cpu_steps=800))
