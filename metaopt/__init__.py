"""metaopt: learned optimizers in JAX.

* ``metaopt.load(name_or_path)`` -> an ``optax.GradientTransformation``.
* ``metaopt.pretrained_names()`` -> the shipped learned optimizers' names.
* ``metaopt.safeguard(opt, fallback)`` -> ``opt`` that falls back to a proven rule.
* ``metaopt.optimizers``: hand-designed baselines (registry over optax).
* ``metaopt.lopt``: learned-optimizer architectures.
* ``metaopt.meta``: meta-training.  ``metaopt.eval``: leaderboard.
* ``metaopt.amortized``: amortized solvers and unrolled L2O.
"""

__version__ = "0.1.0"

import os

from metaopt import pretrained
from metaopt.pretrained import names as pretrained_names  # light: safetensors only
from metaopt.safeguard import safeguard  # light: optax only

__all__ = ["load", "pretrained_names", "safeguard"]


def load(name_or_path, **kwargs):
  """Loads a learned optimizer (shipped name or ``.safetensors`` file) as an optax
  transformation. See ``metaopt.lopt.io.load``; ``pretrained_names()`` lists the
  shipped names. Needs only the core dependencies (jax, optax, numpy, safetensors)."""
  from metaopt.lopt import io  # pylint: disable=import-outside-toplevel
  if not io.is_path(name_or_path):
    pretrained.path(os.fspath(name_or_path))  # An unknown name fails with close matches.
  return io.load(name_or_path, **kwargs)
