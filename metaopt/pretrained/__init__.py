"""Shipped learned-optimizer files (``<name>.safetensors``), loaded by name with
``metaopt.load(name)``; see ``metaopt.lopt.io`` for the format.

``names()`` (also ``metaopt.pretrained_names()``) lists them and ``header(name)``
reads one file's JSON header (architecture, config, metadata) without its arrays;
both need only the standard library and safetensors (no jax), so ``metaopt list
pretrained`` and name checks are cheap.
"""

from __future__ import annotations

import difflib
import json
import os
import pathlib
from typing import Any, Dict, List

import safetensors

#: The folder of the shipped files.
DIR = pathlib.Path(__file__).resolve().parent
#: The safetensors metadata key holding the JSON header (``metaopt.lopt.io.HEADER_KEY``).
HEADER_KEY = "metaopt"


def names() -> List[str]:
  """Names of the shipped learned optimizers (``metaopt.load(name)`` loads one)."""
  return sorted(p.stem for p in DIR.glob("*.safetensors"))


def path(name: str) -> pathlib.Path:
  """The file of shipped optimizer ``name``; an unknown name raises ``KeyError`` with
  close matches (``general_v2`` -> ``general-v2``) and every shipped name."""
  if name not in names():
    close = difflib.get_close_matches(name, names(), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    local = (f" A local {name!r} exists: bare names mean shipped optimizers, so pass it as "
             f"a path, ./{name}." if os.path.exists(name) else "")
    raise KeyError(f"Unknown pretrained learned optimizer {name!r}.{hint} Shipped: "
                   f"{', '.join(names())}. To load a file, pass its path (ending in "
                   f".safetensors).{local}")
  return DIR / f"{name}.safetensors"


def header(name: str) -> Dict[str, Any]:
  """The JSON header of shipped optimizer ``name``: ``format_version``, ``arch``,
  ``config`` and ``metadata`` (``description``, ``trained_on``, cost...)."""
  with safetensors.safe_open(str(path(name)), framework="numpy") as f:
    return json.loads((f.metadata() or {}).get(HEADER_KEY, "{}"))
