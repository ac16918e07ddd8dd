"""``general-v2``: the general-purpose learned optimizer (``general``) on a
learning-rate-free base: its step size is Prodigy's distance estimate ``D_t`` times
the learned per-tensor multiplier (``lopt_config.distance_adapt=True``), so the
learned part no longer has to find each problem's scale from one starting learning
rate. Meta-trained with PES on the five task families of ``general-v1`` (MLPs on
generated teacher data, one of them globally reparameterized, a char-level
transformer on Python's standard library, LASSO, L1-regularized logistic regression),
log-uniform inner horizons of 100-2,000 steps.

None of these families, architecture classes or datasets is a leaderboard v2 task's
except the MLP class (the v2 MLP tasks are then marked as leaked for this optimizer).

Reproduce the shipped file (resumable: rerun the same command)::

  metaopt meta-train configs/general_v2.py --set run.name=general-v2
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {**presets.GENERALIZATION, "family": ",".join(presets.GENERAL_FAMILIES),
          "lopt_config": {"distance_adapt": True, "init_lr": 1.0, "max_lr": 10.0}}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("general_v2", variant, COMMON,
                            changes=presets.generalization_sizes(cpu_steps=600))
