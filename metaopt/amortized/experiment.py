"""One amortized / L2O experiment: train, save, load, evaluate against the iterative
baselines, and report (markdown table + PNG plot). Used by ``metaopt amortized``.

An experiment config is a plain dict: ``method`` (one of ``METHODS``), ``problem``
(a name from ``tasks.problems.problem_names()``) and the fields of the method's
config dataclass (``LISTAConfig``, ``AmortizedConfig`` or ``UnrollConfig``; for
``math_l2o`` also ``lopt``: overrides of the ``math_l2o`` config).

Evaluation on held-out instances (the ``test`` key stream, never trained on):

* ``lista``, ``lista_cp``, ``alista``: NMSE (dB) to the ground-truth code per layer
  ``k = 0..K`` against ISTA and FISTA run for ``k`` iterations;
* ``amortized``: relative objective gap ``(F(x_k) - F*) / (F(0) - F*)`` after ``k``
  solver steps from the prediction versus from zero (``k = 0`` is the fully amortized
  prediction); ``F*`` from the reference solver;
* ``math_l2o``: ``F(x_k) - F*`` for ``k`` up to ``eval_factor`` (10) x the training
  horizon, against ISTA and FISTA with the per-instance step ``1/L``; ``F*`` from a
  long FISTA run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import runpy
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.amortized import amortize, lista, solvers, unroll
from tasks.problems import Problem, get_problem

METHODS = ("lista", "lista_cp", "alista", "amortized", "math_l2o")
_COMMON = ("method", "problem", "num_test", "eval_iters", "eval_factor", "reference_iters",
           "lopt")


def load_config_file(path: str) -> Dict[str, Any]:
  """``CONFIG`` dict of a Python config file (``configs/amortized_*.py``)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Config file {path!r} does not exist.")
  ns = runpy.run_path(path)
  if "CONFIG" not in ns or not isinstance(ns["CONFIG"], dict):
    raise ValueError(f"Config file {path!r} must define a dict named CONFIG.")
  return dict(ns["CONFIG"])


def _method_config(config: Dict[str, Any]):
  method = config.get("method")
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; known: {', '.join(METHODS)}.")
  fields = {k: v for k, v in config.items() if k not in _COMMON}
  if method in lista.VARIANTS:
    fields["variant"] = method
    cls = lista.LISTAConfig
  elif method == "amortized":
    cls = amortize.AmortizedConfig
  else:
    cls = unroll.UnrollConfig
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"Unknown config key(s) {unknown} for method {method!r}; known: "
                     f"{sorted(known | set(_COMMON))}.")
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return cls(**fields)


def _opt_for(problem: Problem, config: Dict[str, Any]):
  return unroll.math_l2o_for(problem, **dict(config.get("lopt") or {}))


def validate(config: Dict[str, Any]) -> None:
  """Raises a clear error for an unknown method, problem or config key."""
  _method_config(config)
  get_problem(config.get("problem", ""))


def train(config: Dict[str, Any], callback=None):
  """Trains the experiment's learned solver; returns the method's result object."""
  problem = get_problem(config.get("problem", ""))
  mcfg = _method_config(config)
  if config["method"] in lista.VARIANTS:
    return lista.train(problem, mcfg, callback=callback)
  if config["method"] == "amortized":
    return amortize.train(problem, mcfg, callback=callback)
  return unroll.train(problem, _opt_for(problem, config), mcfg, callback=callback)


def save(run_dir: str, config: Dict[str, Any], result) -> None:
  """``config.json`` and ``result.pkl`` (numpy arrays only) in ``run_dir``."""
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "experiment.json"), "w") as f:
    json.dump(config, f, indent=2)
  host = dataclasses.replace(result, **{
      f.name: jax.device_get(getattr(result, f.name)) for f in dataclasses.fields(result)})
  with open(os.path.join(run_dir, "result.pkl"), "wb") as f:
    pickle.dump(host, f)


def load(run_dir: str):
  """``(config, result)`` saved by ``save``."""
  paths = [os.path.join(run_dir, n) for n in ("experiment.json", "result.pkl")]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(f"{missing} not found: is {run_dir!r} a directory written by "
                            f"`metaopt amortized train`?")
  with open(paths[0]) as f:
    config = json.load(f)
  with open(paths[1], "rb") as f:
    result = pickle.load(f)
  return config, result


def _objective_curves(problem, xs, insts):
  """``F(x_k)`` per step and instance from a ``(K+1, B, n)`` trajectory."""
  return jax.vmap(lambda x: jax.vmap(problem.objective)(x, insts))(xs)


def _baseline(problem, insts, num_iters):
  out = {}
  for name in ("ista", "fista"):
    run = jax.jit(jax.vmap(lambda i, s=solvers.SOLVERS[name]: s(problem, i, num_iters)))
    out[name.upper()] = jnp.swapaxes(run(insts), 0, 1)
  return out


def evaluate(config: Dict[str, Any], result, seed: int = 0) -> Dict[str, Any]:
  """Curves on held-out instances: ``{"metric", "xlabel", "k", "curves": {label: (K+1,)}}``."""
  problem = get_problem(config["problem"])
  method = config["method"]
  num_test = int(config.get("num_test", 256))
  insts = problem.sample_batch(problem.split_key(jax.random.PRNGKey(seed), "test"), num_test)
  if method in lista.VARIANTS:
    k = result.config.num_layers
    curves = {name: np.asarray(solvers.nmse_db(xs, insts[problem.truth]))
              for name, xs in _baseline(problem, insts, k).items()}
    curves[method.upper().replace("_", "-")] = lista.evaluate(problem, result, insts)
    return {"metric": "NMSE (dB)", "xlabel": "iterations / layers", "log": False,
            "k": np.arange(k + 1), "curves": curves}
  ref_iters = int(config.get("reference_iters", 5000))
  x_star = amortize.solve_batch(problem, insts, ref_iters)
  if method == "amortized":
    mcfg = result.config
    k = int(config.get("eval_iters", 50))
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
  k = int(config.get("eval_factor", 10)) * result.config.horizon
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
