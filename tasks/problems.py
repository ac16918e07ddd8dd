"""Problem families for amortized optimization and classic L2O.

A ``Problem`` is a distribution over *instances* of one composite objective

    F(x; inst) = f(x; data, inst) + l1 * ||x||_1,        x in R^dim,

where ``f`` is smooth with an instance-dependent Lipschitz gradient constant, ``data``
holds arrays shared by every instance (a dictionary, a cost matrix) and an instance
is a dict of arrays sampled by ``sample(data, key)``. Every instance has a
``"context"`` entry: the flat vector an amortized model reads to predict ``x*``.

Problems register twice in the task registry (``as_task``, ``as_task_family``) so
generic optimizers and meta-training see them as ordinary ``Task``s with ``params=x``
and ``loss = F``; amortized solvers and unrolled L2O use the ``Problem`` directly
(``get_problem(name)``) because they need the smooth/non-smooth split.

Families here: strongly convex quadratics and least squares with sampled
conditioning, and entropic optimal transport between 1-D histograms (semi-dual).
Sparse problems (LASSO, L1-logistic regression) are in ``tasks/sparse.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tasks import registry
from tasks.base import SYNTHETIC, ParamInfo, Task, TaskFamily, log_normalizer

Instance = Dict[str, jax.Array]


# eq=False: hashed by identity, so a Problem can be a static argument of jax.jit.
@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
  """A family of composite problem instances (see the module docstring).

  Attributes:
    name: registry name.
    dim: dimension of the variable ``x``.
    data: pytree of arrays shared by all instances (``{}`` if none).
    sample: ``(data, key) -> instance`` dict with at least ``"context"`` (a flat
      float32 vector); jittable and vmappable over ``key``.
    smooth: ``(x, data, inst) -> scalar`` the smooth part ``f``.
    lipschitz: ``(data, inst) -> scalar`` Lipschitz constant of ``grad f`` (an upper
      bound: ``1/L`` is a safe proximal-gradient step).
    l1: weight of ``||x||_1`` (0 for smooth problems).
    reference: optional ``(data, inst) -> x*`` exact or high-accuracy solver
      specific to the problem (closed form, Sinkhorn). ``None``: use FISTA
      (``metaopt.amortized.solvers.reference_solution``).
    step: optional ``(x, data, inst) -> x`` native iterative solver step (e.g. a
      Sinkhorn update) used for semi-amortized fine-tuning; ``None``: an ISTA step.
    truth: optional instance key holding a ground-truth signal (sparse recovery:
      ``"x_true"``), the target of NMSE.
    metadata: description for reports.
  """
  name: str
  dim: int
  data: Any
  sample: Callable[[Any, jax.Array], Instance]
  smooth: Callable[[jax.Array, Any, Instance], jax.Array]
  lipschitz: Callable[[Any, Instance], jax.Array]
  l1: float = 0.0
  reference: Optional[Callable[[Any, Instance], jax.Array]] = None
  step: Optional[Callable[[jax.Array, Any, Instance], jax.Array]] = None
  truth: Optional[str] = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def objective(self, x: jax.Array, inst: Instance) -> jax.Array:
    """``F(x) = f(x) + l1 * ||x||_1`` for one instance, ``x`` of shape ``(dim,)``."""
    value = self.smooth(x, self.data, inst)
    if self.l1:
      value = value + self.l1 * jnp.sum(jnp.abs(x))
    return value

  def sample_batch(self, key: jax.Array, n: int) -> Instance:
    """``n`` instances stacked on a leading axis (deterministic in ``key``)."""
    return _batch_sampler(self.sample, int(n))(self.data, key)

  def split_key(self, key: jax.Array, split: str) -> jax.Array:
    """Disjoint instance streams per split: train and held-out never share a key."""
    return jax.random.fold_in(key, _SPLIT_IDS[split])

  def as_task(self, seed: int = 0, name: Optional[str] = None) -> Task:
    """One fixed instance (from ``seed``) as a ``Task`` with ``params = x``."""
    key = jax.random.PRNGKey(seed)
    ref = float(self.objective(jnp.zeros(self.dim), self.sample(self.data, key)))
    return self._task(key, name or f"{self.name}_seed{seed}", ref)

  def as_task_family(self) -> TaskFamily:
    """``TaskFamily`` whose dynamic part is the instance key (vmappable)."""
    return TaskFamily(
        name=self.name,
        sample_static=lambda key: None,
        sample_dynamic=lambda key, static: key,
        make_task=lambda static, key: self._task(key, self.name, family=self.name),
        metadata=self.task_metadata())

  @property
  def l2o_family_name(self) -> str:
    return f"{self.name}_l2o"

  def as_l2o_family(self) -> TaskFamily:
    """The training instances as a family for learned rules that handle the ``l1``
    term themselves (``math_l2o``): the ``train`` batch's loss is the smooth part
    ``f`` (what the rule differentiates), every other split's is ``F``; instance keys
    come from the ``train`` stream; the loss is normalized by ``|F(0)|`` of the
    instance, so ``F(x_k) / |F(x_0)|`` is the meta-loss."""
    return TaskFamily(
        name=self.l2o_family_name,
        sample_static=lambda key: None,
        sample_dynamic=lambda key, static: self.split_key(key, "train"),
        make_task=lambda static, key: self._task(key, self.l2o_family_name,
                                                 smooth_train=True,
                                                 family=self.l2o_family_name),
        metadata=self.task_metadata())

  def task_metadata(self) -> Dict[str, Any]:
    """Metadata of the problem's tasks and families: ``architecture``
    ``"sparse_problem"`` for an ``l1``-regularised problem, else ``"problem"``;
    ``dataset`` ``"synthetic"`` (instances are generated); ``self.metadata`` may
    override either."""
    return {"architecture": "sparse_problem" if self.l1 else "problem",
            "dataset": SYNTHETIC, "problem": self.name, "dim": self.dim, "l1": self.l1,
            **self.metadata}

  def _task(self, instance_key: jax.Array, name: str, ref: Optional[float] = 1.0,
            smooth_train: bool = False, family: Optional[str] = None) -> Task:
    """The instance of ``instance_key`` as a Task.

    ``data`` is the problem's shared data only; ``batch`` re-derives the instance from
    its key, so a vmapped family (dynamic part = key, data shared) sees distinct
    instances. The batch carries the shared data too: ``loss`` gets no other route to it
    without closing over arrays. ``ref`` (F(0)) scales the log normalizer; inside a
    vmapped family it would be a tracer, so families use 1. ``smooth_train``: the
    ``train`` split's loss leaves out the ``l1`` term, and losses are normalized by
    ``|F(0)|`` (linearly; see ``as_l2o_family``). ``family``: the family the task
    is a member of (``metadata["family"]``), if any.
    """
    dim = self.dim

    def batch(data, key, split):
      del key  # Deterministic problem: the "batch" is the whole instance.
      l1 = 0.0 if smooth_train and split == "train" else self.l1
      return {"shared": data, "instance": self.sample(data, instance_key),
              "l1": jnp.float32(l1)}

    def loss(x, batch, key):
      del key
      value = self.smooth(x, batch["shared"], batch["instance"])
      return value + batch["l1"] * jnp.sum(jnp.abs(x)) if self.l1 else value

    if smooth_train:
      scale = jnp.abs(self.objective(jnp.zeros((dim,), jnp.float32),
                                     self.sample(self.data, instance_key))) + 1e-8
      normalize = lambda value: value / scale  # noqa: E731
    else:
      normalize = log_normalizer(max(abs(ref), 1e-6))
    return Task(
        name=name,
        init=lambda key: jnp.zeros((dim,), jnp.float32),
        loss=loss,
        data=self.data,
        batch=batch,
        abstract_batch=jax.eval_shape(lambda: batch(self.data, instance_key, "train")),
        normalize_loss=normalize,
        param_info=lambda x: ParamInfo("scalar", 1, int(x.shape[-1])),
        metadata={**self.task_metadata(), **({"family": family} if family else {})})


@functools.lru_cache(maxsize=64)
def _batch_sampler(sample, n):
  # One compiled program instead of eager per-primitive dispatch (QR, eigh...).
  return jax.jit(lambda data, key: jax.vmap(lambda k: sample(data, k))(
      jax.random.split(key, n)))


_SPLIT_IDS = {"train": 0, "inner_valid": 1, "outer_valid": 2, "test": 3}

PROBLEMS: registry.Registry[Callable[[], Problem]] = registry.Registry("problem")


def register_problem(name: str, factory: Callable[[], Problem], task_seed: int = 0) -> None:
  """Registers a problem, plus its ``TaskFamily`` (``name``) and one fixed instance
  as a ``Task`` (``name``, seed ``task_seed``) in the task registry."""

  def named():  # The registry name is the problem's name, whatever the builder chose.
    problem = factory()
    return problem if problem.name == name else dataclasses.replace(problem, name=name)

  PROBLEMS.register(name, named)
  registry.register_family(name, lambda: named().as_task_family())
  registry.register_family(f"{name}_l2o", lambda: named().as_l2o_family())
  registry.register_task(name, lambda: named().as_task(task_seed, name))


def get_problem(name: str) -> Problem:
  """The problem registered as ``name`` (built on each call)."""
  return PROBLEMS.get(name)()


def problem_names():
  return PROBLEMS.names()


# ----------------------------------------------------------------------------------
# Strongly convex quadratics and least squares with sampled conditioning.


def _log_uniform(key, low, high):
  return jnp.exp(jax.random.uniform(key, (), minval=jnp.log(low), maxval=jnp.log(high)))


def _random_orthogonal(key, n):
  q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
  return q * jnp.sign(jnp.diag(r))


def quadratic(dim: int = 8, max_cond: float = 100.0, name: Optional[str] = None) -> Problem:
  """``f(x) = 1/2 x'Hx - b'x``, ``H = Q diag(s) Q'`` with eigenvalues log-spaced in
  ``[1/kappa, 1]``, ``kappa ~ logU[1, max_cond]``, ``Q`` Haar, ``b ~ N(0, I)``.

  Context: the upper triangle of ``H`` and ``b``. Exact solution ``H^{-1} b``.
  """
  if dim < 1 or max_cond < 1:
    raise ValueError(f"quadratic needs dim >= 1 and max_cond >= 1, got {dim}, {max_cond}.")
  iu = np.triu_indices(dim)

  def sample(data, key):
    kc, kq, kb = jax.random.split(key, 3)
    kappa = _log_uniform(kc, 1.0, max_cond)
    eig = kappa ** (-jnp.linspace(0.0, 1.0, dim))
    q = _random_orthogonal(kq, dim)
    h = (q * eig) @ q.T
    h = 0.5 * (h + h.T)
    b = jax.random.normal(kb, (dim,))
    return {"H": h, "b": b, "cond": kappa, "context": jnp.concatenate([h[iu], b])}

  return Problem(
      name=name or f"quadratic_d{dim}_cond{max_cond:g}",
      dim=dim, data={}, sample=sample,
      smooth=lambda x, data, inst: 0.5 * x @ inst["H"] @ x - inst["b"] @ x,
      lipschitz=lambda data, inst: jnp.max(jnp.linalg.eigvalsh(inst["H"])),
      reference=lambda data, inst: jnp.linalg.solve(inst["H"], inst["b"]),
      metadata={"kind": "quadratic", "max_cond": max_cond})


def least_squares(m: int = 16, n: int = 8, max_cond: float = 100.0,
                  name: Optional[str] = None) -> Problem:
  """``f(x) = 1/2 ||Ax - b||^2`` with ``A = U diag(s) V'`` (``m >= n``), singular values
  log-spaced in ``[1/sqrt(kappa), 1]`` (so ``cond(A'A) = kappa ~ logU[1, max_cond]``).

  Context: ``A`` (flattened) and ``b``. Exact solution ``lstsq(A, b)``.
  """
  if m < n:
    raise ValueError(f"least_squares needs m >= n for a unique solution, got m={m}, n={n}.")

  def sample(data, key):
    kc, ku, kv, kb = jax.random.split(key, 4)
    kappa = _log_uniform(kc, 1.0, max_cond)
    s = kappa ** (-0.5 * jnp.linspace(0.0, 1.0, n))
    u = _random_orthogonal(ku, m)[:, :n]
    v = _random_orthogonal(kv, n)
    a = (u * s) @ v.T
    b = jax.random.normal(kb, (m,))
    return {"A": a, "b": b, "cond": kappa, "context": jnp.concatenate([a.ravel(), b])}

  return Problem(
      name=name or f"least_squares_m{m}_n{n}_cond{max_cond:g}",
      dim=n, data={}, sample=sample,
      smooth=lambda x, data, inst: 0.5 * jnp.sum((inst["A"] @ x - inst["b"]) ** 2),
      lipschitz=lambda data, inst: jnp.linalg.norm(inst["A"], 2) ** 2,
      reference=lambda data, inst: jnp.linalg.lstsq(inst["A"], inst["b"])[0],
      metadata={"kind": "least_squares", "max_cond": max_cond})


# ----------------------------------------------------------------------------------
# Entropic optimal transport between histograms on [0, 1] (Meta OT, Amos et al. 2022).


def _bumps(key, grid, max_bumps=3):
  """A random histogram on ``grid``: a mixture of 1-3 Gaussian bumps, floored."""
  kn, km, ks, kw = jax.random.split(key, 4)
  active = jnp.arange(max_bumps) < jax.random.randint(kn, (), 1, max_bumps + 1)
  means = jax.random.uniform(km, (max_bumps,), minval=0.1, maxval=0.9)
  stds = jax.random.uniform(ks, (max_bumps,), minval=0.04, maxval=0.15)
  weights = jax.random.uniform(kw, (max_bumps,), minval=0.5, maxval=1.0) * active
  dens = jnp.sum(weights * jnp.exp(-0.5 * ((grid[:, None] - means) / stds) ** 2), axis=1)
  dens = dens / jnp.sum(dens) + 1e-3
  return dens / jnp.sum(dens)


def ot_g_from_f(f, data, inst):
  """The exact ``g`` for a given ``f`` (the semi-dual's inner maximization)."""
  eps = data["eps"]
  return eps * jnp.log(inst["b"]) - eps * jax.scipy.special.logsumexp(
      (f[:, None] - data["C"]) / eps, axis=0)


def ot_sinkhorn_step(f, data, inst):
  """One log-domain Sinkhorn iteration on the potential ``f`` (g eliminated)."""
  eps = data["eps"]
  g = ot_g_from_f(f, data, inst)
  return eps * jnp.log(inst["a"]) - eps * jax.scipy.special.logsumexp(
      (g[None, :] - data["C"]) / eps, axis=1)


def ot_plan(f, data, inst):
  """Transport plan ``P_ij = exp((f_i + g_j - C_ij)/eps)`` with ``g = g(f)``."""
  g = ot_g_from_f(f, data, inst)
  return jnp.exp((f[:, None] + g[None, :] - data["C"]) / data["eps"])


def entropic_ot(n: int = 32, eps: float = 0.01, name: Optional[str] = None,
                ref_iters: int = 2000) -> Problem:
  """Entropic OT between two random histograms ``a, b`` on ``n`` grid points of
  ``[0, 1]`` with squared-distance cost, as a convex problem in the potential ``f``:

      F(f) = -(<f, a> + <g(f), b>),   g(f)_j = eps log b_j - eps LSE_i((f_i - C_ij)/eps)

  (the negated semi-dual; its minimizer makes the plan ``P(f)`` match both
  marginals). ``F`` is invariant to ``f + c``; the reference solution is centred
  (``sum f = 0``) and metrics use ``F`` and marginals, which ignore the shift.
  Context: ``concat(a, b)``. Native step: Sinkhorn.
  """
  grid = jnp.linspace(0.0, 1.0, n)
  data = {"C": (grid[:, None] - grid[None, :]) ** 2, "eps": jnp.float32(eps)}

  def sample(data, key):
    ka, kb = jax.random.split(key)
    a, b = _bumps(ka, grid), _bumps(kb, grid)
    return {"a": a, "b": b, "context": jnp.concatenate([a, b])}

  def smooth(f, data, inst):
    return -(f @ inst["a"] + ot_g_from_f(f, data, inst) @ inst["b"])

  def reference(data, inst):
    f = jax.lax.fori_loop(0, ref_iters, lambda i, f: ot_sinkhorn_step(f, data, inst),
                          jnp.zeros(n))
    return f - jnp.mean(f)

  return Problem(
      name=name or f"entropic_ot_n{n}_eps{eps:g}", dim=n, data=data, sample=sample,
      smooth=smooth,
      # Hessian (1/eps) sum_j b_j (diag(p_j) - p_j p_j') has norm <= 1/eps.
      lipschitz=lambda data, inst: 1.0 / data["eps"],
      reference=reference, step=ot_sinkhorn_step,
      metadata={"kind": "entropic_ot", "eps": eps, "ref_iters": ref_iters})


register_problem("quadratic_d8_cond100", lambda: quadratic(8, 100.0))
register_problem("quadratic_d32_cond1000", lambda: quadratic(32, 1000.0))
register_problem("least_squares_m16_n8_cond100", lambda: least_squares(16, 8, 100.0))
register_problem("entropic_ot_n32_eps0.01", lambda: entropic_ot(32, 0.01))
