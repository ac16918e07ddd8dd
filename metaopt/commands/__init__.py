"""Sub-commands of the ``metaopt`` CLI, one module each (see ``metaopt.cli``)."""
