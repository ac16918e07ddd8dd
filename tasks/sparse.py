"""Sparse problems: LASSO / sparse recovery and L1-regularized logistic regression.

Both are composite ``F(x) = f(x) + lam * ||x||_1`` problems (``tasks.problems.Problem``)
registered as a task family and a fixed task under the same stable name.

LASSO follows the LISTA/ALISTA setting (Gregor & LeCun 2010; Chen et al. 2018;
Liu et al. 2019): a Gaussian dictionary ``A`` (``m x n``, unit-norm columns) fixed by
``dict_seed``; a Bernoulli-Gaussian code ``x`` (each entry non-zero with probability
``p``, value ``N(0, 1)``); ``y = A x + w`` with ``w`` Gaussian at ``snr`` dB per
instance (``||Ax||^2 / ||w||^2 = 10^(snr/10)`` in expectation); objective
``1/2 ||Ax - y||^2 + lam ||x||_1``. The ground-truth code is ``inst["x_true"]``
(target of NMSE); the context is ``y``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from tasks.problems import Problem, register_problem


def gaussian_dictionary(m: int, n: int, seed: int = 0,
                        cond: Optional[float] = None) -> np.ndarray:
  """``A`` with i.i.d. ``N(0, 1/m)`` entries and columns normalized to unit norm.

  ``cond``: if given, the singular values of the Gaussian draw are replaced by a
  geometric sequence from ``cond`` down to 1 before the columns are normalized (as in
  the ill-conditioned tests of Chen et al. 2018); normalization moves the condition
  number of the result slightly (by a few percent at 250 x 500).
  """
  a = np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(m), (m, n))
  if cond is not None:
    if cond < 1:
      raise ValueError(f"gaussian_dictionary needs cond >= 1, got {cond}.")
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    a = (u * np.geomspace(cond, 1.0, min(m, n))) @ vt
  return (a / np.linalg.norm(a, axis=0, keepdims=True)).astype(np.float32)


def lasso_name(m: int, n: int, p: float, snr: float, dict_seed: int = 0,
               cond: Optional[float] = None) -> str:
  """The name ``lasso`` gives its family: ``lasso_m{m}_n{n}_p{p}_{noiseless|snr..}``, then
  ``_cond{cond}`` and ``_dict{dict_seed}`` where they differ from the defaults."""
  snr_tag = "noiseless" if np.isinf(snr) else f"snr{snr:g}"
  return (f"lasso_m{m}_n{n}_p{p:g}_{snr_tag}" + ("" if cond is None else f"_cond{cond:g}")
          + (f"_dict{dict_seed}" if dict_seed else ""))


def lasso(m: int = 64, n: int = 128, p: float = 0.1, snr: float = 40.0, lam: float = 0.1,
          dict_seed: int = 0, cond: Optional[float] = None,
          name: Optional[str] = None) -> Problem:
  """LASSO / sparse recovery problem family (see the module docstring).

  Args:
    m, n: dictionary shape (measurements x code length).
    p: probability that a code entry is non-zero.
    snr: signal-to-noise ratio in dB (``inf`` for noiseless).
    lam: L1 weight of the LASSO objective (used by ISTA/FISTA/LASSO solutions;
      LISTA-type models are trained on the ground-truth code instead).
    dict_seed: seed of the fixed dictionary.
    cond: condition number of the dictionary (``gaussian_dictionary``); ``None`` is a
      plain Gaussian dictionary (cond ~ (sqrt(n) + sqrt(m)) / (sqrt(n) - sqrt(m))).
  """
  if not (m > 0 and n > 0 and 0.0 < p <= 1.0 and lam >= 0):
    raise ValueError(f"lasso needs m, n > 0, 0 < p <= 1, lam >= 0; got m={m}, n={n}, "
                     f"p={p}, lam={lam}.")
  a = jnp.asarray(gaussian_dictionary(m, n, dict_seed, cond))
  data = {"A": a, "L": jnp.float32(np.linalg.norm(np.asarray(a), 2) ** 2)}
  noise_scale = 10.0 ** (-snr / 20.0)

  def sample(data, key):
    ks, kv, kw = jax.random.split(key, 3)
    x = jax.random.bernoulli(ks, p, (n,)) * jax.random.normal(kv, (n,))
    clean = data["A"] @ x
    sigma = noise_scale * jnp.linalg.norm(clean) / np.sqrt(m)
    y = clean + sigma * jax.random.normal(kw, (m,))
    return {"y": y, "x_true": x, "context": y}

  return Problem(
      name=name or lasso_name(m, n, p, snr, dict_seed, cond),
      dim=n, data=data, sample=sample,
      smooth=lambda x, data, inst: 0.5 * jnp.sum((data["A"] @ x - inst["y"]) ** 2),
      lipschitz=lambda data, inst: data["L"],
      l1=lam, truth="x_true",
      metadata={"kind": "lasso", "m": m, "n": n, "p": p, "snr": snr, "lam": lam,
                "dict_seed": dict_seed, "cond": cond})


def l1_logreg(d: int = 50, num_samples: int = 100, lam: float = 0.05, p: float = 0.2,
              scale_decades: float = 0.0, name: Optional[str] = None) -> Problem:
  """L1-regularized logistic regression, one random dataset per instance.

  ``X`` (``num_samples x d``) i.i.d. ``N(0, 1)``, then each column scaled by
  ``10^(-u)``, ``u ~ U[0, scale_decades]`` (heterogeneous curvature: what a diagonal
  preconditioner can fix and a scalar step cannot); labels ``y = sign(X w + 0.1 z)`` in
  ``{-1, +1}`` from a sparse ``w`` (entries non-zero with probability ``p``);
  ``f(w) = mean_i softplus(-y_i x_i' w)``, ``L = ||X||_2^2 / (4 num_samples)``.
  Context: ``concat(X.ravel(), y)``.
  """
  if d < 1 or num_samples < 1 or lam < 0:
    raise ValueError(f"l1_logreg needs d, num_samples >= 1 and lam >= 0; got {d}, "
                     f"{num_samples}, {lam}.")

  def sample(data, key):
    kx, ks, kv, kz, kc = jax.random.split(key, 5)
    x = jax.random.normal(kx, (num_samples, d))
    x = x * 10.0 ** (-scale_decades * jax.random.uniform(kc, (d,)))
    w = jax.random.bernoulli(ks, p, (d,)) * jax.random.normal(kv, (d,))
    y = jnp.sign(x @ w + 0.1 * jax.random.normal(kz, (num_samples,)))
    y = jnp.where(y == 0, 1.0, y)
    return {"X": x, "y": y, "w_true": w, "context": jnp.concatenate([x.ravel(), y])}

  def smooth(w, data, inst):
    return jnp.mean(jax.nn.softplus(-inst["y"] * (inst["X"] @ w)))

  return Problem(
      name=name or f"l1_logreg_d{d}_n{num_samples}_lam{lam:g}",
      dim=d, data={}, sample=sample, smooth=smooth,
      lipschitz=lambda data, inst: jnp.linalg.norm(inst["X"], 2) ** 2 / (4 * num_samples),
      l1=lam,
      metadata={"kind": "l1_logreg", "d": d, "num_samples": num_samples, "lam": lam, "p": p,
                "scale_decades": scale_decades})


register_problem("lasso_m64_n128_p0.1_snr40", lambda: lasso(64, 128, 0.1, 40.0))
register_problem("lasso_m250_n500_p0.1_snr40", lambda: lasso(250, 500, 0.1, 40.0))
# The classic LISTA / ALISTA setting (Chen et al. 2018; Liu et al. 2019): noiseless, noisy
# and ill-conditioned dictionaries; the small noiseless one for quick experiments.
register_problem("lasso_m64_n128_p0.1_noiseless", lambda: lasso(64, 128, 0.1, np.inf))
register_problem("lasso_m250_n500_p0.1_noiseless", lambda: lasso(250, 500, 0.1, np.inf))
register_problem("lasso_m250_n500_p0.1_snr20", lambda: lasso(250, 500, 0.1, 20.0))
for _cond in (5, 30, 50):
  register_problem(f"lasso_m250_n500_p0.1_noiseless_cond{_cond}",
                   lambda c=_cond: lasso(250, 500, 0.1, np.inf, cond=float(c)))
# The Open-L2O sizes (256 x 512, 512 x 1024), with the out-of-distribution settings of
# the per-instance ALISTA comparison: other sparsity, other noise, another dictionary.
_OPEN_L2O = [(m, n, p, snr, 0) for m, n in ((256, 512), (512, 1024))
             for snr in (np.inf, 40.0, 30.0, 20.0) for p in (0.05, 0.1, 0.2)]
for _args in _OPEN_L2O + [(256, 512, 0.1, 40.0, 1), (512, 1024, 0.1, 40.0, 1)]:
  register_problem(lasso_name(*_args),
                   lambda a=_args: lasso(*a[:4], dict_seed=a[4]))
register_problem("l1_logreg_d50_n100_lam0.05", lambda: l1_logreg(50, 100, 0.05))
register_problem("l1_logreg_d50_n100_lam0.01_scaled2",
                 lambda: l1_logreg(50, 100, 0.01, scale_decades=2.0))
