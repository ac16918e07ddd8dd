"""Held-out data: the datasets and task families a leaderboard suite seals.

A sealed suite's datasets and synthetic task families are registered here, by the
suite that seals them. Meta-training refuses a family whose dataset or name is
sealed (``check_meta_training``) unless the user forces it, and a learned optimizer
that used one anyway is ineligible for that suite (``metaopt.eval.entrants``).
``tests/eval/test_sealed.py`` checks that every dataset of a sealed suite is sealed
and that no shipped optimizer's ``trained_on`` touches a sealed item.

This is a registry (not read from the suite files) so that the low layers
(``tasks``, ``metaopt.meta``) can check it without importing the leaderboard.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

from tasks.base import SYNTHETIC

#: Sealed dataset -> the suite that seals it.
SEALED_DATASETS: Dict[str, str] = {
    "fashion_mnist": "v3", "mnist_5k": "v3", "fortunes": "v3", "breast_cancer": "v3",
}
#: Sealed classes of generated problems: a family with generated data
#: (``tasks.SYNTHETIC``) of one of these architecture classes is held out -> suite.
#: Quadratics stay open (L2O research trains on them); a learned optimizer
#: meta-trained on quadratics is still ineligible for v3 by the leakage rule
#: (``metaopt.eval.entrants.leakage``: generated data of the same class).
SEALED_SYNTHETIC: Dict[str, str] = {"classic_function": "v3"}

class SealedDataError(ValueError):
  """Meta-training asked for a dataset or family that a leaderboard suite holds out."""


def overlap(families: Mapping[str, Tuple[Optional[str], Optional[str]]]) -> List[str]:
  """The sealed items among ``families`` (``{name: (dataset, architecture)}``), each
  as ``"dataset NAME (sealed by vN)"`` or ``"family NAME: generated CLASS problems
  (sealed by vN)"``."""
  hits, seen = [], set()
  for name, (dataset, arch) in families.items():
    if dataset in SEALED_DATASETS and dataset not in seen:
      seen.add(dataset)
      hits.append(f"dataset {dataset} (sealed by {SEALED_DATASETS[dataset]})")
    elif dataset in (None, SYNTHETIC) and arch in SEALED_SYNTHETIC:
      hits.append(f"family {name}: generated {arch} problems (sealed by "
                  f"{SEALED_SYNTHETIC[arch]})")
  return hits


def check_meta_training(families: Mapping[str, Tuple[Optional[str], Optional[str]]],
                        allow_sealed: bool = False) -> List[str]:
  """Refuses meta-training on sealed data.

  Args:
    families: ``{family name: (its dataset, its architecture class)}`` (from the
      family's ``metadata``).
    allow_sealed: force it anyway (the caller records it in the exported header).
  Returns:
    the sealed items used (empty unless ``allow_sealed``).
  Raises:
    SealedDataError: naming the items, the suite and how to force it.
  """
  hits = overlap(families)
  if hits and not allow_sealed:
    raise SealedDataError(
        f"meta-training on held-out data: {', '.join(hits)}. Sealed data is what the "
        "leaderboard judges on; meta-train on other data, or pass --set run.allow_sealed=True "
        "(the exported weights then record it and are ineligible for that suite).")
  return hits
