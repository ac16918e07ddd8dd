"""Held-out data: the datasets and task families a leaderboard suite seals.

A sealed suite's datasets and synthetic task families are registered here, by the
suite that seals them. Meta-training refuses a family whose dataset or name is
sealed (``check_meta_training``) unless the user forces it, and a learned optimizer
that used one anyway is ineligible for that suite (``metaopt.eval.entrants``).
``tests/eval/test_sealed.py`` checks that every task of a sealed suite is covered
and that no shipped optimizer's ``trained_on`` touches a sealed item.

This is a registry (not read from the suite files) so that the low layers
(``tasks``, ``metaopt.meta``) can check it without importing the leaderboard.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional

#: Sealed dataset -> the suite that seals it.
SEALED_DATASETS: Dict[str, str] = {
    "fashion_mnist": "v3", "mnist_5k": "v3", "fortunes": "v3", "breast_cancer": "v3",
    "wine": "v3",
}
#: Sealed synthetic task families (by the family name a task declares in its
#: ``metadata["family"]`` or registry name prefix) -> the suite that seals it.
SEALED_FAMILIES: Dict[str, str] = {
    "quadratic": "v3", "rosenbrock": "v3",
}


class SealedDataError(ValueError):
  """Meta-training asked for a dataset or family that a leaderboard suite holds out."""


def sealed_family(name: str) -> Optional[str]:
  """The sealed family ``name`` belongs to (``quadratic`` for ``quadratic_d10_cond10``,
  ``quadratic_noisy_family``...), or None."""
  for fam in SEALED_FAMILIES:
    if name == fam or name.startswith(fam + "_"):
      return fam
  return None


def overlap(datasets: Iterable[str], families: Iterable[str]) -> List[str]:
  """The sealed items among ``datasets`` and ``families``, each as
  ``"dataset NAME (sealed by vN)"`` / ``"family NAME (sealed by vN)"``."""
  hits = [f"dataset {d} (sealed by {SEALED_DATASETS[d]})" for d in dict.fromkeys(datasets)
          if d in SEALED_DATASETS]
  for f in dict.fromkeys(families):
    fam = sealed_family(f)
    if fam:
      hits.append(f"family {f} (sealed by {SEALED_FAMILIES[fam]})")
  return hits


def check_meta_training(families: Mapping[str, Optional[str]], allow_sealed: bool = False
                        ) -> List[str]:
  """Refuses meta-training on sealed data.

  Args:
    families: ``{family name: its dataset (or None / "synthetic")}``.
    allow_sealed: force it anyway (recorded in the exported header by the caller).
  Returns:
    the sealed items used (empty unless ``allow_sealed``).
  Raises:
    SealedDataError: naming the items, the suite and how to force it.
  """
  hits = overlap([d for d in families.values() if d], list(families))
  if hits and not allow_sealed:
    raise SealedDataError(
        f"meta-training on held-out data: {', '.join(hits)}. Sealed data is what the "
        "leaderboard judges on; meta-train on other data, or pass run.allow_sealed=true "
        "(the exported weights then record it and are ineligible for that suite).")
  return hits
