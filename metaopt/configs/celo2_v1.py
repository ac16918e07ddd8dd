"""``celo2-v1``: the Celo2-style learned optimizer (``celo2``: a normalized per-parameter
MLP whose direction is Newton-Schulz orthogonalized for hidden matrices, Adam's
direction elsewhere, decoupled weight decay, warm-up + cosine to the run's horizon),
meta-trained with PES on the five task families of ``general-v1``/``general-v2``
(``presets.GENERAL_FAMILIES``: MLPs on generated teacher data, one of them globally
reparameterized, a char-level transformer on Python's standard library, LASSO,
L1-regularized logistic regression; none sealed by leaderboard v3), log-uniform inner
horizons of 100-2,000 steps. Every inner run sees its own horizon (``num_steps`` in the
optimizer state), so the schedule and the fraction-of-training features are trained
as they are used.

Meta-parameters: the base learning rate and weight decay (log), the Adam path's scale,
the skip weights of the matrix direction and the per-parameter MLP; at initialization
the rule is Muon (hidden matrices) + AdamW (the rest) at learning rate 1e-3.

Reproduce (resumable: rerun the same command)::

  metaopt meta-train configs/celo2_v1.py --set run.name=celo2-v1
"""

from metaopt.meta import presets
from metaopt.meta.config import MetaTrainConfig

COMMON = {**presets.GENERALIZATION, "lopt": "celo2",
          "family": ",".join(presets.GENERAL_FAMILIES), "lopt_config": {}}


def get_config(variant: str = "cpu") -> MetaTrainConfig:
  return presets.experiment("celo2_v1", variant, COMMON,
                            changes=presets.generalization_sizes(cpu_steps=600))
