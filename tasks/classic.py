"""Classic deterministic test functions with known minima.

=========== ====== ============================================= ============ ===========
function    dim    formula                                       minimizer    init box
=========== ====== ============================================= ============ ===========
rosenbrock  d >= 2 sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2      (1, ..., 1)  [-2, 2]^d
rastrigin   d      10 d + sum x_i^2 - 10 cos(2 pi x_i)            0            [-5.12, 5.12]^d
ackley      d      -20 exp(-0.2 rms(x)) - exp(mean cos 2 pi x)    0            [-5, 5]^d
                   + 20 + e
beale       2      (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2         (3, 0.5)     [-4.5, 4.5]^2
                   + (2.625 - x + xy^3)^2
booth       2      (x + 2y - 7)^2 + (2x + y - 5)^2                (1, 3)       [-10, 10]^2
=========== ====== ============================================= ============ ===========

Every minimum value is 0. Ackley is a cone at its minimizer (``rms`` is not
differentiable at 0); its ``rms`` uses a safe square root whose gradient at 0 is the
subgradient 0. Params are ``{"x": (dim,)}``, initialised uniformly in ``init_scale``
times the init box. Batches are empty dicts (the functions are deterministic).
The normalizer's reference is the mean loss over 256 fixed draws from the full init
box, so the normalized loss is ~1 at a typical start and 0 at the minimum.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tasks import common
from tasks.base import SYNTHETIC, ParamInfo, Task, TaskFamily, log_normalizer
from tasks.registry import register_family, register_task


def rosenbrock(x: jax.Array) -> jax.Array:
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rastrigin(x: jax.Array) -> jax.Array:
  return 10.0 * x.shape[0] + jnp.sum(x ** 2 - 10.0 * jnp.cos(2.0 * jnp.pi * x))


def _safe_sqrt(s: jax.Array) -> jax.Array:
  """``sqrt(s)`` with gradient 0 (not NaN) at ``s == 0``."""
  positive = s > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


def ackley(x: jax.Array) -> jax.Array:
  rms = _safe_sqrt(jnp.mean(x ** 2))
  return (-20.0 * jnp.exp(-0.2 * rms) - jnp.exp(jnp.mean(jnp.cos(2.0 * jnp.pi * x)))
          + 20.0 + jnp.e)


def beale(x: jax.Array) -> jax.Array:
  a, b = x[0], x[1]
  return ((1.5 - a + a * b) ** 2 + (2.25 - a + a * b ** 2) ** 2
          + (2.625 - a + a * b ** 3) ** 2)


def booth(x: jax.Array) -> jax.Array:
  a, b = x[0], x[1]
  return (a + 2.0 * b - 7.0) ** 2 + (2.0 * a + b - 5.0) ** 2


@dataclasses.dataclass(frozen=True)
class ClassicFunction:
  """A test function with its known minimum.

  Attributes:
    fn: ``x (dim,) -> scalar``.
    minimizer: ``dim -> x*`` (a known global minimizer).
    minimum: the known minimum value ``fn(x*)``.
    box: half-width of the standard init box ``[-box, box]^dim``.
    dim: required dimension (``None``: any dimension >= ``min_dim``).
    min_dim: smallest dimension allowed.
  """
  fn: Callable[[jax.Array], jax.Array]
  minimizer: Callable[[int], np.ndarray]
  minimum: float
  box: float
  dim: Optional[int] = None
  min_dim: int = 1


FUNCTIONS: Dict[str, ClassicFunction] = {
    "rosenbrock": ClassicFunction(rosenbrock, lambda d: np.ones(d), 0.0, 2.0, min_dim=2),
    "rastrigin": ClassicFunction(rastrigin, lambda d: np.zeros(d), 0.0, 5.12),
    "ackley": ClassicFunction(ackley, lambda d: np.zeros(d), 0.0, 5.0),
    "beale": ClassicFunction(beale, lambda d: np.array([3.0, 0.5]), 0.0, 4.5, dim=2),
    "booth": ClassicFunction(booth, lambda d: np.array([1.0, 3.0]), 0.0, 10.0, dim=2),
}


def get_function(name: str) -> ClassicFunction:
  if name not in FUNCTIONS:
    raise ValueError(f"Unknown classic function {name!r}; known: {sorted(FUNCTIONS)}.")
  return FUNCTIONS[name]


def _resolve_dim(function: str, dim: Optional[int]) -> int:
  f = get_function(function)
  if f.dim is not None:
    if dim not in (None, f.dim):
      raise ValueError(f"{function} is defined in dimension {f.dim} only, got dim={dim}.")
    return f.dim
  dim = 2 if dim is None else int(dim)
  if dim < f.min_dim:
    raise ValueError(f"{function} needs dim >= {f.min_dim}, got {dim}.")
  return dim


def reference_loss(function: str, dim: int, num: int = 256) -> float:
  """Mean loss over ``num`` fixed uniform draws from the init box (the normalizer scale)."""
  f = get_function(function)
  x = np.random.default_rng(0).uniform(-f.box, f.box, size=(num, dim)).astype(np.float32)
  return float(jax.jit(lambda x: jnp.mean(jax.vmap(f.fn)(x)))(x))


def build_classic_task(name: str, function: str, dim: int, init_seed: Any = None,
                       init_scale: Any = 1.0, reference: Optional[float] = None,
                       metadata: Optional[Dict[str, Any]] = None) -> Task:
  """A task minimizing ``function`` from ``x0 ~ U[-init_scale * box, init_scale * box]^dim``.

  ``init_seed`` (int or traced uint32) is folded into the init key; ``init_scale``
  may be traced.
  """
  f = get_function(function)
  reference = reference if reference is not None else reference_loss(function, dim)

  def init(key):
    u = jax.random.uniform(common.seed_key(key, init_seed), (dim,), jnp.float32, -1.0, 1.0)
    return {"x": u * f.box * init_scale}

  def loss(params, batch, key):
    del batch, key
    return f.fn(params["x"])

  meta = {"architecture": "classic_function", "dataset": SYNTHETIC, "function": function,
          "dim": dim, "minimum": f.minimum,
          "minimizer": f.minimizer(dim).tolist(), "num_params": dim}
  meta.update(metadata or {})
  return Task(name=name, init=init, loss=loss, data={}, batch=lambda data, key, split: {},
              abstract_batch={}, normalize_loss=log_normalizer(reference),
              param_info=lambda params: {"x": ParamInfo("scalar", 1, dim)}, metadata=meta)


def classic_name(function: str, dim: int) -> str:
  """``<function>_d<dim>`` (``beale``, ``booth``: the bare name, always 2-D)."""
  return function if get_function(function).dim is not None else f"{function}_d{dim}"


def classic_task(function: str = "rosenbrock", dim: Optional[int] = None,
                 name: Optional[str] = None) -> Task:
  """The test function ``function`` in ``dim`` dimensions (see the module table)."""
  dim = _resolve_dim(function, dim)
  return build_classic_task(name or classic_name(function, dim), function, dim)


def classic_family(function: str = "rosenbrock", dim: Optional[int] = None,
                   init_scale_range: Tuple[float, float] = (0.1, 1.0),
                   name: Optional[str] = None) -> TaskFamily:
  """One test function from random starts: dynamic ``init_seed`` (uint32) and
  ``init_scale`` (log-uniform on ``init_scale_range``, fraction of the init box)."""
  dim = _resolve_dim(function, dim)
  name = name or f"{classic_name(function, dim)}_family"
  reference = reference_loss(function, dim)
  lo, hi = init_scale_range

  def sample_dynamic(key, static):
    del static
    k1, k2 = jax.random.split(key)
    return {"init_seed": common.random_seed(k1), "init_scale": common.log_uniform(k2, lo, hi)}

  def make_task(static, dynamic):
    return build_classic_task(f"{name}/{classic_name(function, dim)}", function, dim,
                              dynamic["init_seed"], dynamic["init_scale"], reference,
                              metadata={"family": name})

  return TaskFamily(name, lambda key: dim, sample_dynamic, make_task,
                    {"architecture": "classic_function", "dataset": SYNTHETIC,
                     "function": function, "dim": dim, "init_scale_range": (lo, hi)})


_REGISTERED = [("rosenbrock", 2), ("rosenbrock", 10), ("rastrigin", 10), ("ackley", 10),
               ("beale", 2), ("booth", 2)]

for _fn, _dim in _REGISTERED:
  register_task(classic_name(_fn, _dim), lambda f=_fn, d=_dim: classic_task(f, d))

register_family("rosenbrock_d10_family", lambda: classic_family("rosenbrock", 10))
register_family("rastrigin_d10_family", lambda: classic_family("rastrigin", 10))
