"""Learned optimizers: ``build(arch, config)``, ``arch_names()``; each architecture is
one module that registers itself (imported below)."""

from metaopt.lopt.base import (LearnedOptimizer, arch_names, build, config_to_dict, register,
                               replace_config)

# Architecture modules (each registers itself on import).
from metaopt.lopt import mlp  # noqa: F401
from metaopt.lopt import lstm  # noqa: F401
from metaopt.lopt import adam  # noqa: F401
from metaopt.lopt import math_l2o  # noqa: F401
from metaopt.lopt import mulo  # noqa: F401
from metaopt.lopt import adafactor_mlp  # noqa: F401
from metaopt.lopt import hypernet  # noqa: F401
from metaopt.lopt import general  # noqa: F401
from metaopt.lopt import celo2  # noqa: F401
