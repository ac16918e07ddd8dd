"""Shipped learned-optimizer files (``<name>.safetensors``), loaded by name with
``metaopt.load(name)``; see ``metaopt.lopt.io`` for the format and
``metaopt.lopt.io.pretrained_names()`` for what is present."""
