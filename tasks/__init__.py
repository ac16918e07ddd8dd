"""The task registry: ``tasks.names()``, ``tasks.get(name)``, ``tasks.get_family(name)``."""

from tasks.base import (SPLITS, ParamInfo, Task, TaskConfig, TaskFamily, abstract_params,
                        fixed_family, log_normalizer, make_normalizer, num_params)
from tasks.registry import (UnknownNameError, family_names, get, get_family, names,
                            register_family, register_task, task_names)

# Importing the task modules registers their tasks and families.
from tasks import catalog as _catalog  # noqa: F401,E402
