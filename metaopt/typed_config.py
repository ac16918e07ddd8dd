"""Typed dataclass configs: config files, nested dicts and ``--set key=value`` overrides.

One machinery for every command that reads a config (``metaopt meta-train``,
``metaopt amortized train``):

* ``load_file(path[:variant], expected)`` executes a Python config file and calls its
  ``get_config(variant)``. Config files are executed Python: load trusted files only.
* ``from_dict(cls, values)`` builds a (nested) frozen dataclass from a nested dict,
  checking every value against the field's type (``typing.get_type_hints``); unknown
  keys and wrongly typed values fail with one line naming the dotted key, the
  expected type and close matches.
* ``apply_overrides(config, ["estimator.sigma=0.01", ...])`` parses each value as a
  Python literal (else a string) and rebuilds the config once, so every
  ``__post_init__`` check runs on the final values.

A dataclass may define a classmethod ``field_types(values) -> {field: type}`` to give
a field a type that depends on its siblings' values (e.g. a section whose dataclass
depends on ``method``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
import types
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """A config value or key that cannot be used; the message says which and why."""


#: The range of an ``int`` config value (seeds, sizes, step counts reach numpy / jax).
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
#: Where the shipped experiment configs live (``metaopt/configs/<name>.py``).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


# -- types ----------------------------------------------------------------------------


def field_types(cls: type, values: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """``{field name: resolved type}`` of dataclass ``cls`` (given sibling ``values``)."""
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  out = {n: hints[n] for n in names}
  if hasattr(cls, "field_types"):
    out.update(cls.field_types(dict(values or {})))
  return out


def type_name(tp: Any) -> str:
  """Readable name of a type hint: ``int``, ``tuple of int``, ``dict``, ``int or None``."""
  if tp is Any:
    return "any value"
  if dataclasses.is_dataclass(tp):
    return f"a {tp.__name__} (dict of its fields)"
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    return " or ".join("None" if a is type(None) else type_name(a) for a in args)
  if origin is tuple:
    if len(args) == 2 and args[1] is Ellipsis:
      return f"tuple of {type_name(args[0])}"
    return "tuple (" + ", ".join(type_name(a) for a in args) + ")"
  if origin in (list, Sequence, typing.Sequence):
    return f"list of {type_name(args[0])}" if args else "list"
  if origin is dict or origin is Mapping:
    return f"dict of {type_name(args[0])} -> {type_name(args[1])}" if args else "dict"
  if origin is typing.Literal:
    return "one of " + ", ".join(repr(a) for a in args)
  return getattr(tp, "__name__", str(tp))


def _wrong(key: str, tp: Any, value: Any) -> ConfigError:
  return ConfigError(f"Config key {key!r} expects {type_name(tp)}, got {value!r} "
                     f"({type(value).__name__}).")


def check_value(key: str, value: Any, tp: Any) -> Any:
  """``value`` checked against type hint ``tp`` and normalized: ints widen to float,
  lists become tuples for tuple fields, dicts become nested dataclasses."""
  if tp is Any:
    return value
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if isinstance(value, Mapping):
      return from_dict(tp, value, prefix=key + ".")
    raise _wrong(key, tp, value)
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    for arm in (a for a in args if a is not type(None)):
      try:
        return check_value(key, value, arm)
      except ConfigError:
        continue
    raise _wrong(key, tp, value)
  if origin is typing.Literal:
    if value in args:
      return value
    raise _wrong(key, tp, value)
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      raise _wrong(key, tp, value)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(check_value(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if not args:
      return tuple(value)
    if len(args) != len(value):
      raise _wrong(key, tp, value)
    return tuple(check_value(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
  if origin in (list, Sequence, typing.Sequence):
    if not isinstance(value, (tuple, list)):
      raise _wrong(key, tp, value)
    if not args:
      return list(value)
    return [check_value(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
  if origin in (dict, Mapping) or tp in (dict, Dict):
    if not isinstance(value, Mapping):
      raise _wrong(key, tp, value)
    if not args:
      return dict(value)
    return {check_value(f"{key}.{k}", k, args[0]): check_value(f"{key}.{k}", v, args[1])
            for k, v in value.items()}
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise _wrong(key, tp, value)
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      if not INT64_MIN <= value <= INT64_MAX:  # jax / numpy would overflow later.
        text = str(value)
        shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"
        raise ConfigError(f"Config key {key!r} expects an integer in the int64 range "
                          f"[-2**63, 2**63 - 1], got {shown}.")
      return value
    raise _wrong(key, tp, value)
  if isinstance(tp, type):
    if isinstance(value, tp):
      return value
    raise _wrong(key, tp, value)
  return value


# -- dicts ----------------------------------------------------------------------------


def unknown_key(key: str, known: Sequence[str], where: str = "config") -> ConfigError:
  """One-line error for an unknown (dotted) ``key``: close matches of its last part
  first (``sigma`` -> ``estimator.sigma``), then the valid keys."""
  by_leaf: Dict[str, list] = {}
  for k in known:
    by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
  leaf = key.rsplit(".", 1)[-1]
  close = [k for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6)
           for k in by_leaf[name]]
  close = list(dict.fromkeys(close + difflib.get_close_matches(key, known, n=3, cutoff=0.8)))
  hint = f" Did you mean {', '.join(close[:3])}?" if close else ""
  return ConfigError(f"Unknown {where} key {key!r}.{hint} Valid keys: {', '.join(known)}.")


def from_dict(cls: Type[T], values: Mapping[str, Any], prefix: str = "") -> T:
  """Dataclass ``cls`` from a nested dict (missing fields take their defaults)."""
  types_ = field_types(cls, values)
  for key in values:
    if key not in types_:
      raise unknown_key(f"{prefix}{key}", _all_keys(cls, prefix, values))
  checked = {k: check_value(f"{prefix}{k}", v, types_[k]) for k, v in values.items()}
  return cls(**checked)


def _all_keys(cls: type, prefix: str, values: Mapping[str, Any]) -> Tuple[str, ...]:
  """Every settable key of ``cls``, nested sections as ``section.field``."""
  out = []
  for name, tp in field_types(cls, values).items():
    out.append(f"{prefix}{name}")
    if dataclasses.is_dataclass(tp):
      sub = values.get(name) if isinstance(values.get(name), Mapping) else {}
      out.extend(_all_keys(tp, f"{prefix}{name}.", sub))
  return tuple(out)


def to_dict(config: Any) -> Dict[str, Any]:
  """Nested dict of a (nested) dataclass config."""
  return dataclasses.asdict(config)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
  """``base`` with ``update`` merged in, recursively for dict values."""
  out = dict(base)
  for k, v in update.items():
    if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
      out[k] = merge(out[k], v)
    else:
      out[k] = v
  return out


def nest(dotted: Mapping[str, Any]) -> Dict[str, Any]:
  """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``."""
  out: Dict[str, Any] = {}
  for key, value in dotted.items():
    *path, last = key.split(".")
    node = out
    for part in path:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f"Config key {key!r} sets a field inside {part!r}, which is "
                          "given a non-dict value too.")
    node[last] = merge(node[last], value) if isinstance(node.get(last), dict) and isinstance(
        value, Mapping) else value
  return out


def replace(config: T, values: Mapping[str, Any]) -> T:
  """``config`` with the nested or dotted ``values`` applied (all at once, checked).
  A dict value given for a dict field is merged into it, key by key."""
  return from_dict(type(config), merge(_shallow_dict(config), nest(values)))


def _shallow_dict(config: Any) -> Dict[str, Any]:
  """Nested dict of a dataclass whose nested dataclasses stay dicts (for merging) but
  whose leaves keep their Python types."""
  out = {}
  for f in dataclasses.fields(config):
    v = getattr(config, f.name)
    out[f.name] = _shallow_dict(v) if dataclasses.is_dataclass(v) else v
  return out


# -- overrides and files --------------------------------------------------------------


def parse_override(text: str) -> Tuple[str, Any]:
  """``"key=value"`` -> ``(key, value)``; the value is a Python literal when it
  parses as one (``3``, ``1e-3``, ``True``, ``(16, 16)``, ``{'a': 1}``), else a string."""
  if "=" not in text:
    raise ConfigError(f"Override {text!r} must look like key=value, one argument with no "
                      "space around '=' (e.g. --set estimator.sigma=0.01).")
  key, raw = text.split("=", 1)
  if not key.strip():
    raise ConfigError(f"Override {text!r} has no key before '='.")
  try:
    value = ast.literal_eval(raw.strip())
  except (ValueError, SyntaxError):
    value = raw
  return key.strip(), value


def _leaves(key: str, value: Any):
  """``(dotted key, value)`` of every leaf an override sets (dict values expanded)."""
  if isinstance(value, Mapping) and value:
    for k, v in value.items():
      yield from _leaves(f"{key}.{k}", v)
  else:
    yield key, value


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
  """``{dotted key: value}`` of ``--set``-style strings, refusing what would be
  dropped silently: a key given twice with different values, a key given a whole
  value while another override sets a field inside it, and ``--set k v`` (the value
  as a separate argument; the error shows ``k=v``)."""
  overrides = list(overrides)
  parsed: Dict[str, Any] = {}
  leaves: Dict[str, Tuple[Any, str]] = {}
  for i, text in enumerate(overrides):
    if "=" not in text and i + 1 < len(overrides) and "=" not in overrides[i + 1]:
      raise ConfigError(f"Override {text!r} has no '=': write --set {text}={overrides[i + 1]} "
                        "(key=value, one argument).")
    key, value = parse_override(text)
    for leaf, v in _leaves(key, value):
      for other, (w, source) in leaves.items():
        same = other == leaf
        if same and w == v:
          continue
        if same or other.startswith(leaf + ".") or leaf.startswith(other + "."):
          raise ConfigError(f"Conflicting overrides {source!r} and {text!r}: both set "
                            f"{min(leaf, other, key=len)!r}; give each key once.")
      leaves[leaf] = (v, text)
    parsed[key] = value
  return parsed


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
  """``config`` with ``--set``-style ``key=value`` strings applied (dotted keys) at
  once; conflicting ones fail (see ``parse_overrides``)."""
  if not overrides:
    return config
  return replace(config, parse_overrides(overrides))


def split_variant(path: str) -> Tuple[str, Optional[str]]:
  """``"configs/x.py:pod"`` -> ``("configs/x.py", "pod")``."""
  if ":" in os.path.basename(path):
    path, variant = path.rsplit(":", 1)
    return path, variant
  return path, None


def config_names() -> Tuple[str, ...]:
  """Names of the shipped configs (``metaopt/configs/<name>.py``)."""
  if not os.path.isdir(CONFIGS_DIR):
    return ()
  return tuple(sorted(f[:-3] for f in os.listdir(CONFIGS_DIR)
                      if f.endswith(".py") and not f.startswith("_")))


def resolve_config(path: str) -> str:
  """The file of config ``path`` (without its ``:variant``): the path itself when it
  exists, else a shipped config addressed by name (``general_v2``) or by its
  repository path (``configs/general_v2.py``, which also works outside a checkout,
  e.g. from a wheel install). A folder, a non-Python file or an unknown name fails
  with one line naming it."""
  if os.path.isdir(path):
    raise ConfigError(f"Config {path!r} is a folder; give a config file (a .py file defining "
                      "get_config(), e.g. configs/mlp_digits.py) or a shipped config name "
                      f"({', '.join(config_names())}).")
  if os.path.exists(path):
    if not path.endswith(".py"):
      raise ConfigError(f"Config {path!r} is not a Python config file: configs are .py files "
                        "defining get_config(variant=...) (a run's saved config.json is a "
                        "record, not an input).")
    return path
  head, base = os.path.split(os.path.normpath(path))
  name = base[:-3] if base.endswith(".py") else base
  shipped = os.path.join(CONFIGS_DIR, f"{name}.py")
  if (head in ("", "configs") or os.path.basename(head) == "configs") and name in config_names():
    return shipped
  close = difflib.get_close_matches(name, config_names(), n=3, cutoff=0.5)
  hint = f" Did you mean {', '.join(close)}?" if close else ""
  raise FileNotFoundError(f"Config file {path!r} does not exist.{hint} Shipped configs "
                          f"(by name): {', '.join(config_names())}.")


def load_file(path: str, expected: Type[T], overrides: Sequence[str] = (),
              variant: Optional[str] = None) -> T:
  """Executes config file ``path[:variant]`` (trusted Python; ``path`` may be a shipped
  config's name, see ``resolve_config``), calls its ``get_config([variant])``, checks
  it returns an ``expected`` (a nested dict is converted) and applies ``overrides``."""
  if variant is None:
    path, variant = split_variant(path)
  path = resolve_config(path)
  spec = importlib.util.spec_from_file_location("metaopt_user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path!r} must define get_config(variant=...).")
  config = module.get_config(variant) if variant is not None else module.get_config()
  if isinstance(config, Mapping):
    config = from_dict(expected, config)
  if not isinstance(config, expected):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, "
                    f"expected {expected.__name__}.")
  return apply_overrides(config, overrides)
