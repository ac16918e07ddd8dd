"""metaopt: learned optimizers in JAX.

* ``metaopt.load(name_or_path)`` -> an ``optax.GradientTransformation``.
* ``metaopt.safeguard(opt, fallback)`` -> ``opt`` that falls back to a proven rule.
* ``metaopt.optimizers``: hand-designed baselines (registry over optax).
* ``metaopt.lopt``: learned-optimizer architectures.
* ``metaopt.meta``: meta-training.  ``metaopt.eval``: leaderboard.
* ``metaopt.amortized``: amortized solvers and unrolled L2O.
"""

__version__ = "0.1.0"

from metaopt.safeguard import safeguard  # noqa: E402  (light: optax only)


def load(name_or_path, **kwargs):
  """Loads a learned optimizer (shipped name or ``.safetensors`` file) as an optax
  transformation. See ``metaopt.lopt.io.load``."""
  from metaopt.lopt import io  # pylint: disable=import-outside-toplevel
  return io.load(name_or_path, **kwargs)
