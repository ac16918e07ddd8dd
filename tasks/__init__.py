"""The task registry: ``tasks.names()``, ``tasks.get(name)``, ``tasks.get_family(name)``.

Naming scheme (names are stable; a changed definition gets a new name with a
``_v2``, ``_v3``... suffix, the unsuffixed name being version 1):

* ``<model>_<data>_<shape>[_<variant>]`` for tasks, e.g. ``mlp_digits_w32_d2``
  (MLP on digits, width 32, 2 hidden layers), ``mlp_fmnist_w128_d2_mup`` (μP
  parametrization), ``conv_digits_c8x2`` (2 conv layers of 8 channels),
  ``transformer_text_d64_l2`` (d_model 64, 2 layers), ``logistic_mnist1d``.
  Data tags: ``digits``, ``mnist5k``, ``fmnist``, ``mnist1d``, ``text`` (``text_stdlib``).
* Problems without data name their size and conditioning:
  ``quadratic_d10_cond10`` (dimension 10, condition number 10),
  ``rosenbrock_d2``, ``rastrigin_d10``.
* Families end in ``_family``: ``mlp_digits_family`` (sampled shape),
  ``mlp_digits_w32_d2_family`` (fixed shape, sampled seeds). A family's member tasks
  are named ``<family>/<task name>``.
"""

from tasks.base import (ARCHITECTURES, SPLITS, SYNTHETIC, ParamInfo, Task, TaskConfig,
                        TaskFamily, abstract_params, fixed_family, log_normalizer,
                        make_normalizer, num_params)
from tasks.registry import (DuplicateNameError, Registry, UnknownNameError, family_names, get,
                            get_family, names, register_family, register_task, task_names,
                            unknown_name_message, unregister_task)

from tasks.haiku_tasks import dense_param_info, from_haiku, from_haiku_family

# Importing the task modules registers their tasks and families.
from tasks import catalog as _catalog  # noqa: F401,E402
