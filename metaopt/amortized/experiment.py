"""One amortized / L2O experiment: train, save, load, evaluate against the iterative
baselines, and report (markdown table + PNG plot). Used by ``metaopt amortized``.

An experiment is an ``ExperimentConfig``: ``method`` (one of ``METHODS``), ``problem``
(a name from ``tasks.problems.problem_names()``), ``train``: the method's config
dataclass (``LISTAConfig`` for the ``lista.VARIANTS``, whose ``variant`` follows
``method``; ``AmortizedConfig``; ``UnrollConfig`` for ``math_l2o``), ``lopt``
(overrides of the ``math_l2o`` optimizer config) and ``eval`` (``EvalConfig``). A
config file ``configs/amortized_*.py`` defines ``get_config(variant=...)`` returning
one; ``load_config`` reads it with the same loader and ``--set`` overrides as
meta-training (``metaopt.typed_config``). Config files are executed Python: trusted
files only.

A saved run holds no pickle: ``experiment.json`` (the config), ``result.json`` (the
result's scalars and the structure of its arrays) and ``result.npz`` (the arrays,
read with ``allow_pickle=False``), so loading a run directory executes no code.
``load`` checks what it reads: unreadable, truncated or malformed files, learned
arrays whose names or shapes do not fit the method and problem, and non-finite
learned weights are a ``RunFileError`` naming the file (no table of NaNs).

Evaluation on held-out instances (the ``test`` key stream, never trained on):

* the LISTA family (``lista.VARIANTS``): NMSE (dB) to the ground-truth code per layer
  ``k = 0..K`` against ISTA and FISTA run for ``k`` iterations;
* ``amortized``: relative objective gap ``(F(x_k) - F*) / (F(0) - F*)`` after ``k``
  solver steps from the prediction versus from zero (``k = 0`` is the fully amortized
  prediction); ``F*`` from the reference solver;
* ``math_l2o``: ``F(x_k) - F*`` for ``k`` up to ``eval.factor`` (10) x the training
  horizon, against ISTA and FISTA with the per-instance step ``1/L``; ``F*`` from a
  long FISTA run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import typed_config
from metaopt.amortized import amortize, lista, solvers, unroll
from tasks.problems import Problem, get_problem, problem_names

METHODS = tuple(lista.VARIANTS) + ("amortized", "math_l2o")


class RunFileError(ValueError):
  """A saved run directory cannot be used (unreadable, malformed, misshaped, NaN)."""


#: The ``train`` section's dataclass and the result type of each method family.
_CLASSES = {"lista": (lista.LISTAConfig, lista.LISTAResult),
            "amortized": (amortize.AmortizedConfig, amortize.AmortizedResult),
            "math_l2o": (unroll.UnrollConfig, unroll.UnrollResult)}


def _classes(method: str):
  return _CLASSES["lista" if method in lista.VARIANTS else method]


def train_config_class(method: str) -> type:
  """The ``train`` section's dataclass of ``method``."""
  return _classes(method)[0]


def result_class(method: str) -> type:
  return _classes(method)[1]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Held-out evaluation.

  Attributes:
    num_test: held-out instances.
    iters: solver steps after the prediction (``amortized``).
    factor: evaluate ``math_l2o`` over ``factor`` x its training horizon.
    reference_iters: iterations of the reference solver giving ``x*`` / ``F*``.
  """
  num_test: int = 256
  iters: int = 50
  factor: int = 10
  reference_iters: int = 5000

  def __post_init__(self):
    for name in ("num_test", "iters", "factor", "reference_iters"):
      if getattr(self, name) < 1:
        raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """One amortized / L2O experiment (see the module docstring).

  Attributes:
    method: one of ``METHODS``.
    problem: problem family name (``tasks.problems.problem_names()``).
    train: the method's training config (``train_config_class(method)``; default:
      its defaults). For the LISTA family ``train.variant`` is set to ``method``.
    lopt: ``math_l2o`` optimizer config overrides (``math_l2o`` only).
    eval: held-out evaluation.
  """
  method: str = "lista"
  problem: str = "lasso_m64_n128_p0.1_snr40"
  train: Optional[Any] = None
  lopt: Dict[str, Any] = dataclasses.field(default_factory=dict)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

  @classmethod
  def field_types(cls, values: Mapping[str, Any]) -> Dict[str, Any]:
    """``train``'s type depends on ``method`` (for ``typed_config``)."""
    method = values.get("method", cls.method)
    return {"train": train_config_class(method)} if method in METHODS else {}

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"Unknown method {self.method!r}; choose one of {METHODS}.")
    if self.problem not in problem_names():
      get_problem(self.problem)  # Raises the registry's error with close matches.
    cls = train_config_class(self.method)
    train = cls() if self.train is None else self.train
    if not isinstance(train, cls):
      raise ValueError(f"method {self.method!r} trains with a {cls.__name__}, got "
                       f"{type(train).__name__}.")
    if self.method in lista.VARIANTS:
      train = dataclasses.replace(train, variant=self.method)
    object.__setattr__(self, "train", train)
    if self.lopt and self.method != "math_l2o":
      raise ValueError(f"lopt overrides apply to method 'math_l2o' only, not {self.method!r}.")

  def to_dict(self) -> Dict[str, Any]:
    return typed_config.to_dict(self)


def check_variant(variant: str, variants: Sequence[str] = ("cpu",)) -> None:
  """For a config file's ``get_config``: ``variant`` is one it offers."""
  if variant not in variants:
    raise ValueError(f"Unknown variant {variant!r}; choose one of {list(variants)}.")


def from_dict(values: Mapping[str, Any]) -> ExperimentConfig:
  """An ``ExperimentConfig`` from a nested (or dotted) dict; every value type-checked."""
  return typed_config.from_dict(ExperimentConfig, typed_config.nest(values))


def load_config(path: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
  """Executes ``configs/amortized_*.py[:variant]`` (trusted Python only), calls its
  ``get_config`` and applies ``key=value`` overrides (``train.steps=500``)."""
  return typed_config.load_file(path, ExperimentConfig, overrides)


def _opt_for(problem: Problem, config: ExperimentConfig):
  return unroll.math_l2o_for(problem, **config.lopt)


def train(config: ExperimentConfig, callback=None, run_dir: Optional[str] = None):
  """Trains the experiment's learned solver; returns the method's result object.
  ``run_dir``: where ``math_l2o``'s meta-training keeps checkpoints (resumable)."""
  problem = get_problem(config.problem)
  if config.method in lista.VARIANTS:
    return lista.train(problem, config.train, callback=callback)
  if config.method == "amortized":
    return amortize.train(problem, config.train, callback=callback)
  return unroll.train(problem, _opt_for(problem, config), config.train, run_dir=run_dir,
                      callback=callback)


# -- saved runs: JSON + npz, no pickle ------------------------------------------------

_RUN_FILES = ("experiment.json", "result.json", "result.npz")


def _encode(tree, arrays: Dict[str, np.ndarray], path: str):
  """JSON description of a pytree of dicts / lists / tuples / None / scalars / arrays;
  each array goes to ``arrays`` under a fresh name that the description records."""
  if tree is None or isinstance(tree, (bool, str)):
    return {"value": tree}
  if isinstance(tree, (int, float)):
    return {"value": tree}
  if isinstance(tree, Mapping):
    for k in tree:
      if not isinstance(k, str):
        raise TypeError(f"cannot save key {k!r} under {path!r}: keys must be str.")
    return {"dict": {k: _encode(v, arrays, f"{path}/{k}") for k, v in tree.items()}}
  if isinstance(tree, (list, tuple)):
    kind = "tuple" if isinstance(tree, tuple) else "list"
    return {kind: [_encode(v, arrays, f"{path}/{i}") for i, v in enumerate(tree)]}
  array = np.asarray(jax.device_get(tree))
  if array.dtype == object:
    raise TypeError(f"cannot save {type(tree).__name__} at {path!r} as an array.")
  name = f"a{len(arrays)}"  # npz member names; `path` (haiku keys hold '/') is for errors.
  arrays[name] = array
  return {"array": name}


def _decode(node, arrays):
  if not isinstance(node, dict) or len(node) != 1:
    raise ValueError(f"malformed result.json node {node!r}.")
  (kind, value), = node.items()
  if kind == "value":
    return value
  if kind == "array":
    return arrays[value]
  if kind == "dict":
    return {k: _decode(v, arrays) for k, v in value.items()}
  if kind in ("list", "tuple"):
    items = [_decode(v, arrays) for v in value]
    return tuple(items) if kind == "tuple" else items
  raise ValueError(f"malformed result.json node kind {kind!r}.")


def save(run_dir: str, config: ExperimentConfig, result) -> None:
  """``experiment.json``, ``result.json`` and ``result.npz`` in ``run_dir``."""
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "experiment.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2)
  arrays: Dict[str, np.ndarray] = {}
  fields = {f.name: _encode(getattr(result, f.name), arrays, f.name)
            for f in dataclasses.fields(result) if f.name != "config"}
  with open(os.path.join(run_dir, "result.json"), "w") as f:
    json.dump({"type": type(result).__name__, "fields": fields}, f, indent=1)
  np.savez(os.path.join(run_dir, "result.npz"), **arrays)


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise RunFileError(f"{path} is not valid JSON ({e}); it is truncated or was edited. "
                       "Re-run `metaopt amortized train`.") from e


def load(run_dir: str):
  """``(config, result)`` saved by ``save``; reads JSON and arrays only. Unreadable,
  truncated or malformed files are a ``RunFileError`` naming the file;
  ``check_learned`` then checks the learned arrays against the method."""
  paths = [os.path.join(run_dir, n) for n in _RUN_FILES]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(f"{missing} not found: is {run_dir!r} a directory written by "
                            f"`metaopt amortized train`?")
  config = from_dict(_read_json(paths[0]))
  saved = _read_json(paths[1])
  cls = result_class(config.method)
  if not isinstance(saved, dict) or saved.get("type") != cls.__name__:
    found = saved.get("type") if isinstance(saved, dict) else saved
    raise RunFileError(f"{paths[1]} holds a {found!r}, expected {cls.__name__} "
                       f"for method {config.method!r}.")
  try:
    with np.load(paths[2], allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except Exception as e:  # pylint: disable=broad-except  (zip, zlib, format errors)
    raise RunFileError(f"{paths[2]} is truncated or corrupt ({type(e).__name__}: {e}). "
                       "Re-run `metaopt amortized train`.") from e
  try:
    fields = {k: _decode(v, arrays) for k, v in saved["fields"].items()}
    # A LISTA result holds the config it trained with: the recipe filled in.
    train = config.train.resolved() if config.method in lista.VARIANTS else config.train
    result = cls(config=train, **fields)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise RunFileError(f"{paths[1]} and {paths[2]} do not fit together or are malformed "
                       f"({type(e).__name__}: {e}). Re-run `metaopt amortized train`.") from e
  return config, result


def learned_arrays(config: ExperimentConfig, result) -> Dict[str, Any]:
  """The arrays a method learned (``{name: pytree}``), i.e. what ``evaluate`` uses."""
  if config.method in lista.VARIANTS:
    return {"params": result.params}
  if config.method == "amortized":
    return {"params": result.params, "stats": result.stats}
  return {"theta": result.theta}


def _expected_arrays(config: ExperimentConfig, problem: Problem) -> Dict[str, Any]:
  """Shapes (``jax.ShapeDtypeStruct``) of ``learned_arrays`` for ``config``."""
  key = jax.random.PRNGKey(0)
  if config.method in lista.VARIANTS:
    tc = config.train
    return {"params": jax.eval_shape(lambda: lista.init_params(
        problem, config.method, tc.num_layers, tc.resolved().init))}
  if config.method == "amortized":
    context = problem.sample_batch(key, 1)["context"]
    net = amortize.model(problem.dim, config.train.hidden)
    stats = jax.ShapeDtypeStruct(context.shape[1:], context.dtype)
    return {"params": jax.eval_shape(net.init, key, context),
            "stats": {"mean": stats, "std": stats}}
  return {"theta": jax.eval_shape(_opt_for(problem, config).init_meta_params, key)}


def _named_shapes(tree) -> Dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in leaves}


def check_learned(config: ExperimentConfig, result, where: str) -> None:
  """Raises ``RunFileError`` (naming ``where``) when the learned arrays' names or
  shapes do not fit ``config`` (method, problem, sizes) or any of them is not finite
  (a diverged training: its evaluation would be a table of NaNs)."""
  got = _named_shapes(learned_arrays(config, result))
  expected = _named_shapes(_expected_arrays(config, get_problem(config.problem)))
  problems = [f"missing {k} {v}" for k, v in sorted(expected.items()) if k not in got]
  problems += [f"unexpected {k} {v}" for k, v in sorted(got.items()) if k not in expected]
  problems += [f"{k} has shape {got[k]}, expected {expected[k]}"
               for k in sorted(set(got) & set(expected)) if got[k] != expected[k]]
  if problems:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5
                                       else "")
    raise RunFileError(f"{where} does not fit method {config.method!r} on problem "
                       f"{config.problem!r}: {shown}. Re-run `metaopt amortized train`.")
  bad = [name for name, leaf in jax.tree_util.tree_flatten_with_path(
      learned_arrays(config, result))[0]
         if np.issubdtype(np.asarray(leaf).dtype, np.inexact)
         and not np.all(np.isfinite(np.asarray(leaf)))]
  if bad:
    names = ", ".join(jax.tree_util.keystr(p) for p in bad[:5])
    raise RunFileError(f"{where} holds non-finite learned weights (NaN or inf) in {names}: "
                       "the training diverged. Re-train with a smaller learning rate.")


def _objective_curves(problem, xs, insts):
  """``F(x_k)`` per step and instance from a ``(K+1, B, n)`` trajectory."""
  return jax.vmap(lambda x: jax.vmap(problem.objective)(x, insts))(xs)


def _baseline(problem, insts, num_iters):
  out = {}
  for name in ("ista", "fista"):
    run = jax.jit(jax.vmap(lambda i, s=solvers.SOLVERS[name]: s(problem, i, num_iters)))
    out[name.upper()] = jnp.swapaxes(run(insts), 0, 1)
  return out


def evaluate(config: ExperimentConfig, result, seed: int = 0,
             source: str = "the trained solver") -> Dict[str, Any]:
  """Curves on held-out instances: ``{"metric", "xlabel", "k", "curves": {label: (K+1,)}}``.
  Learned arrays that do not fit the method or are not finite are a ``RunFileError``
  naming ``source`` (``check_learned``), not a table of NaNs."""
  check_learned(config, result, source)
  problem = get_problem(config.problem)
  method = config.method
  num_test = config.eval.num_test
  insts = problem.sample_batch(problem.split_key(jax.random.PRNGKey(seed), "test"), num_test)
  if method in lista.VARIANTS:
    k = result.config.num_layers
    curves = {name: np.asarray(solvers.nmse_db(xs, insts[problem.truth]))
              for name, xs in _baseline(problem, insts, k).items()}
    curves[method.upper().replace("_", "-")] = lista.evaluate(problem, result, insts)
    return {"metric": "NMSE (dB)", "xlabel": "iterations / layers", "log": False,
            "k": np.arange(k + 1), "curves": curves}
  ref_iters = config.eval.reference_iters
  x_star = amortize.solve_batch(problem, insts, ref_iters)
  if method == "amortized":
    mcfg = result.config
    k = config.eval.iters
    pred = amortize.predict(problem, result, insts)
    cold = amortize.evaluate(problem, None, insts, x_star, k, mcfg.solver)
    warm = amortize.evaluate(problem, pred, insts, x_star, k, mcfg.solver)
    label = f"{mcfg.solver} steps"
    return {"metric": "(F(x_k) - F*) / (F(0) - F*)", "xlabel": f"{label} after prediction",
            "log": True, "k": np.arange(k + 1),
            "curves": {f"{mcfg.solver} from 0": cold["rel_gap"],
                       f"amortized ({mcfg.loss}) + {mcfg.solver}": warm["rel_gap"]},
            "dist_db": {"cold": cold["dist_db"], "warm": warm["dist_db"]}}
  # math_l2o
  k = config.eval.factor * result.config.horizon
  f_star = jax.vmap(problem.objective)(x_star, insts)
  curves = {name: np.asarray(jnp.mean(_objective_curves(problem, xs, insts) - f_star, 1))
            for name, xs in _baseline(problem, insts, k).items()}
  opt = _opt_for(problem, config)
  curves["math_l2o"] = np.asarray(jnp.mean(
      unroll.rollout(problem, opt, result.theta, insts, k) - f_star, 1))
  return {"metric": "F(x_k) - F*", "xlabel": "iterations", "log": True,
          "k": np.arange(k + 1), "curves": curves, "train_horizon": result.config.horizon}


def table(report: Dict[str, Any], at: Optional[List[int]] = None) -> str:
  """Markdown table of every curve at iterations ``at`` (default: a log-spaced few)."""
  kmax = int(report["k"][-1])
  if at is None:
    at = sorted({k for k in (0, 1, 2, 4, 8, 16, 32, 100, 300, 1000) if k <= kmax} | {kmax})
  fmt = (lambda v: f"{v:.3g}") if report["log"] else (lambda v: f"{v:.1f}")
  head = f"| {report['metric']} \\ k | " + " | ".join(str(k) for k in at) + " |"
  rows = [head, "|" + "---|" * (len(at) + 1)]
  for name, curve in report["curves"].items():
    rows.append(f"| {name} | " + " | ".join(fmt(float(curve[k])) for k in at) + " |")
  return "\n".join(rows)


def plot(report: Dict[str, Any], path: str, title: str = "") -> str:
  """PNG of every curve against ``k``; returns ``path``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, curve in report["curves"].items():
    curve = np.asarray(curve, np.float64)
    if report["log"]:
      # Gaps below float32 resolution (~1e-7 relative) are round-off, not progress.
      curve = np.maximum(curve, 1e-9)
    ax.plot(report["k"], curve, label=name)
  if report["log"]:
    ax.set_yscale("log")
  if report.get("train_horizon"):
    ax.axvline(report["train_horizon"], color="gray", ls=":", label="training horizon")
  ax.set_xlabel(report["xlabel"])
  ax.set_ylabel(report["metric"])
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
