"""The split rule shared by every dataset: four splits from one or two pools.

* Datasets with an official train/test split: ``train`` and ``inner_valid`` are the
  first 90% and last 10% of the official training set under a fixed permutation;
  ``outer_valid`` and ``test`` are the two halves of the official test set under a
  fixed permutation. So meta-training never sees the official test examples.
* Datasets without one (``digits``, ``mnist_5k``): one fixed permutation of all
  examples cut 70/10/10/10 into ``train/inner_valid/outer_valid/test``.

Permutations come from ``np.random.default_rng(SPLIT_SEED)``; the split arrays are
written to disk once, so later numpy versions cannot change a prepared dataset.
"""

from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from tasks.base import SPLITS

Arrays = Dict[str, np.ndarray]

SPLIT_SEED = 0
TRAIN_FRACTION = 0.9
POOL_FRACTIONS = (0.7, 0.1, 0.1, 0.1)


def _check_same_length(arrays: Mapping[str, np.ndarray]) -> int:
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"Arrays of one split must share their leading dimension; got {lengths}.")
  return next(iter(lengths.values()))


def _take(arrays: Mapping[str, np.ndarray], index: np.ndarray) -> Arrays:
  return {k: np.asarray(v)[index] for k, v in arrays.items()}


def from_train_test(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                    seed: int = SPLIT_SEED) -> Dict[str, Arrays]:
  """Four splits from an official train/test pair (rule in the module docstring)."""
  rng = np.random.default_rng(seed)
  n_train, n_test = _check_same_length(train), _check_same_length(test)
  perm = rng.permutation(n_train)
  cut = int(round(TRAIN_FRACTION * n_train))
  perm_test = rng.permutation(n_test)
  half = n_test // 2
  return {
      "train": _take(train, perm[:cut]),
      "inner_valid": _take(train, perm[cut:]),
      "outer_valid": _take(test, perm_test[:half]),
      "test": _take(test, perm_test[half:]),
  }


def from_pool(pool: Mapping[str, np.ndarray], seed: int = SPLIT_SEED,
              fractions=POOL_FRACTIONS) -> Dict[str, Arrays]:
  """Four splits from one pool: a fixed permutation cut by ``fractions`` (sum 1)."""
  if len(fractions) != len(SPLITS) or not np.isclose(sum(fractions), 1.0):
    raise ValueError(f"fractions must be {len(SPLITS)} numbers summing to 1; got {fractions}.")
  n = _check_same_length(pool)
  perm = np.random.default_rng(seed).permutation(n)
  ends = np.round(np.cumsum(fractions) * n).astype(int)
  starts = np.concatenate([[0], ends[:-1]])
  return {s: _take(pool, perm[a:b]) for s, a, b in zip(SPLITS, starts, ends)}


def contiguous(stream: np.ndarray, fractions=(0.8, 0.1, 0.05, 0.05)) -> Dict[str, np.ndarray]:
  """Cuts one 1-D stream into four contiguous pieces (no context leaks across splits)."""
  n = len(stream)
  ends = np.round(np.cumsum(fractions) * n).astype(int)
  starts = np.concatenate([[0], ends[:-1]])
  return {s: stream[a:b] for s, a, b in zip(SPLITS, starts, ends)}
