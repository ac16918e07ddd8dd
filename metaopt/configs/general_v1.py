"""``general-v1``: the general-purpose learned optimizer (``general``), meta-trained
with PES on a mixture of five task families that differ in architecture and data
(MLPs on generated teacher data, one of them globally reparameterized, a char-level
transformer on Python's standard library, LASSO, L1-regularized logistic regression),
with log-uniform inner horizons of 100-2,000 steps.

None of these families, architecture classes or datasets is a leaderboard v2 task's
except the MLP class (the v2 MLP tasks are then marked as leaked for this optimizer).

Reproduce the shipped file (resumable: rerun the same command)::

  metaopt meta-train configs/general_v1.py --set run.name=general-v1

``pod`` runs the same recipe with more tasks in flight (any device count dividing 64).
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {**presets.GENERALIZATION, "family": ",".join(presets.GENERAL_FAMILIES)}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("general_v1", variant, COMMON,
                            changes=presets.generalization_sizes(cpu_steps=600))
