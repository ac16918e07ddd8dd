"""Hand-designed baseline optimizers: a registry over optax / optax.contrib.

* ``get(name, schedule=..., total_steps=..., **hparams)`` -> optax transformation;
* ``names()``, ``spec(name)`` (a ``BaselineSpec``: defaults, search space, ...);
* ``tune(task, name, steps, ...)``: grid / random / quasi-random search on
  ``inner_valid``;
* the schedule family: ``warmup_fraction`` and ``lr_decay`` hyper-parameters of
  AlgoPerf's baselines (``warmup_decay_schedule``).
"""

from metaopt.optimizers.registry import (DECAYS, SCHEDULE_HPARAMS, SCHEDULES, BaselineSpec,
                                         UnknownOptimizerError, config, get, make_schedule,
                                         names, parse_hparams, parse_value, register, spec,
                                         warmup_decay_schedule)
from metaopt.optimizers.space import Choice, LogUniform, OneMinusLogUniform, Uniform
from metaopt.optimizers import baselines as _baselines  # noqa: F401  (registers)
from metaopt.optimizers.tune import (TUNE_SEED_OFFSET, Trial, TuneResult, search_configs,
                                     train_lr_batch, tune)
