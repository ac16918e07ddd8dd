"""Sparse and classic problem families: generators, registry, reference solvers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

import tasks
from metaopt.amortized import solvers
from tasks import problems, sparse


@pytest.fixture(scope="module")
def lasso_small():
  return sparse.lasso(m=32, n=64, p=0.1, snr=40.0, lam=0.05)


def test_dictionary_columns_unit_norm():
  a = sparse.gaussian_dictionary(20, 50, seed=3)
  np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-5)
  assert not np.allclose(a, sparse.gaussian_dictionary(20, 50, seed=4))


def test_lasso_generator_sparsity_and_snr():
  pb = sparse.lasso(m=64, n=128, p=0.1, snr=20.0)
  inst = pb.sample_batch(jax.random.PRNGKey(0), 512)
  frac = float(jnp.mean(inst["x_true"] != 0))
  assert abs(frac - 0.1) < 0.01
  clean = inst["x_true"] @ pb.data["A"].T
  snr = 10 * np.log10(np.sum(clean ** 2) / np.sum((inst["y"] - clean) ** 2))
  assert abs(snr - 20.0) < 0.5
  np.testing.assert_array_equal(inst["context"], inst["y"])


def test_same_key_same_instance_and_splits_differ(lasso_small):
  key = jax.random.PRNGKey(7)
  a = lasso_small.sample_batch(key, 4)
  b = lasso_small.sample_batch(key, 4)
  np.testing.assert_array_equal(a["y"], b["y"])
  tr = lasso_small.sample_batch(lasso_small.split_key(key, "train"), 4)
  te = lasso_small.sample_batch(lasso_small.split_key(key, "test"), 4)
  assert not np.allclose(tr["y"], te["y"])


def test_ista_fista_match_sklearn_lasso(lasso_small):
  """ISTA and FISTA reach sklearn's coordinate-descent solution (its objective is
  ``1/(2m)||y - Ax||^2 + alpha ||x||_1``, so ``alpha = lam / m``)."""
  inst = lasso_small.sample(lasso_small.data, jax.random.PRNGKey(1))
  x_f = jax.jit(lambda i: solvers.fista(lasso_small, i, 2000))(inst)[-1]
  x_i = jax.jit(lambda i: solvers.ista(lasso_small, i, 4000))(inst)[-1]
  a = np.asarray(lasso_small.data["A"], np.float64)
  sk = Lasso(alpha=lasso_small.l1 / a.shape[0], fit_intercept=False, tol=1e-12,
             max_iter=100000).fit(a, np.asarray(inst["y"], np.float64)).coef_
  np.testing.assert_allclose(x_f, sk, atol=2e-5)
  np.testing.assert_allclose(x_i, sk, atol=2e-5)
  # KKT: the prox-gradient mapping vanishes at the solution, not at the start.
  assert float(solvers.prox_grad_residual(lasso_small, x_f, inst)) < 1e-4
  assert float(solvers.prox_grad_residual(lasso_small, jnp.zeros(64), inst)) > 1e-1


def test_fista_faster_than_ista(lasso_small):
  inst = lasso_small.sample(lasso_small.data, jax.random.PRNGKey(2))
  f_star = lasso_small.objective(solvers.reference_solution(lasso_small, inst), inst)
  gap = lambda xs: float(lasso_small.objective(xs[-1], inst) - f_star)
  assert gap(solvers.fista(lasso_small, inst, 50)) < gap(solvers.ista(lasso_small, inst, 50))


def test_l1_logreg_solution_matches_scipy():
  """FISTA on L1-logistic regression vs L-BFGS-B on the split form w = u - v, u,v >= 0."""
  from scipy.optimize import minimize  # pylint: disable=import-outside-toplevel
  pb = sparse.l1_logreg(d=10, num_samples=40, lam=0.05)
  inst = pb.sample(pb.data, jax.random.PRNGKey(0))
  w = solvers.reference_solution(pb, inst, num_iters=4000)
  x, y = np.asarray(inst["X"], np.float64), np.asarray(inst["y"], np.float64)

  def fun(uv):
    u, v = uv[:10], uv[10:]
    z = -y * (x @ (u - v))
    val = np.mean(np.logaddexp(0, z)) + 0.05 * np.sum(u + v)
    s = 1 / (1 + np.exp(-z))
    g = x.T @ (-y * s) / len(y)
    return val, np.concatenate([g + 0.05, -g + 0.05])

  res = minimize(fun, np.zeros(20), jac=True, method="L-BFGS-B",
                 bounds=[(0, None)] * 20, options={"ftol": 1e-14, "gtol": 1e-10})
  np.testing.assert_allclose(w, res.x[:10] - res.x[10:], atol=1e-3)
  assert abs(float(pb.objective(w, inst)) - res.fun) < 1e-5


@pytest.mark.parametrize("name", ["quadratic_d8_cond100", "least_squares_m16_n8_cond100"])
def test_closed_form_solutions_are_stationary(name):
  pb = problems.get_problem(name)
  inst = pb.sample(pb.data, jax.random.PRNGKey(0))
  x = pb.reference(pb.data, inst)
  g = jax.grad(pb.smooth)(x, pb.data, inst)
  assert float(jnp.linalg.norm(g)) < 1e-3
  assert 1.0 <= float(inst["cond"]) <= 100.0


def test_quadratic_condition_number_is_sampled():
  pb = problems.quadratic(dim=6, max_cond=1000.0)
  inst = pb.sample_batch(jax.random.PRNGKey(0), 16)
  conds = np.array([np.linalg.cond(h) for h in np.asarray(inst["H"], np.float64)])
  np.testing.assert_allclose(conds, inst["cond"], rtol=1e-2)
  assert conds.max() / conds.min() > 10


def test_entropic_ot_reference_matches_marginals():
  pb = problems.entropic_ot(n=16, eps=0.05, ref_iters=500)
  inst = pb.sample(pb.data, jax.random.PRNGKey(3))
  f = pb.reference(pb.data, inst)
  plan = problems.ot_plan(f, pb.data, inst)
  np.testing.assert_allclose(plan.sum(1), inst["a"], atol=1e-5)
  np.testing.assert_allclose(plan.sum(0), inst["b"], atol=1e-5)
  # The semi-dual is minimized at Sinkhorn's fixed point (gradient = a - P 1).
  assert float(jnp.linalg.norm(jax.grad(pb.smooth)(f, pb.data, inst))) < 1e-5


def test_registry_tasks_and_families():
  names = tasks.names()
  for name in ["lasso_m64_n128_p0.1_snr40", "lasso_m250_n500_p0.1_snr40",
               "l1_logreg_d50_n100_lam0.05", "quadratic_d8_cond100",
               "entropic_ot_n32_eps0.01"]:
    assert name in names
  task = tasks.get("lasso_m64_n128_p0.1_snr40")
  x = task.init(jax.random.PRNGKey(0))
  assert x.shape == (128,)
  batch = task.sample_batch(jax.random.PRNGKey(0))
  pb = problems.get_problem("lasso_m64_n128_p0.1_snr40")
  assert float(task.loss(x, batch, None)) == pytest.approx(
      float(pb.objective(x, batch["instance"])))
  fam = tasks.get_family("lasso_m64_n128_p0.1_snr40")
  cfg = fam.sample_batch(jax.random.PRNGKey(0), 3)

  def loss0(dyn):
    t = fam.make_task(cfg.static, dyn)
    return t.loss(jnp.zeros(128), t.batch(t.data, None, "train"), None)

  losses = jax.vmap(loss0)(cfg.dynamic)
  assert losses.shape == (3,) and len(set(np.asarray(losses).tolist())) == 3


def test_unknown_problem_lists_known():
  with pytest.raises(KeyError, match="lasso_m64_n128_p0.1_snr40"):
    problems.get_problem("lasso_m64_n128")


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="0 < p <= 1"):
    sparse.lasso(p=0.0)
  with pytest.raises(ValueError, match="m >= n"):
    problems.least_squares(m=4, n=8)


def test_lasso_noiseless_and_named_variants():
  pb = problems.get_problem("lasso_m64_n128_p0.1_noiseless")
  inst = pb.sample_batch(jax.random.PRNGKey(2), 16)
  np.testing.assert_allclose(inst["y"], inst["x_true"] @ pb.data["A"].T, atol=1e-5)
  for name in ("lasso_m250_n500_p0.1_noiseless", "lasso_m250_n500_p0.1_snr20",
               "lasso_m250_n500_p0.1_noiseless_cond50"):
    assert name in problems.problem_names()
  assert sparse.lasso(32, 64, snr=20.0, cond=10.0).name == "lasso_m32_n64_p0.1_snr20_cond10"


@pytest.mark.parametrize("cond", [5.0, 50.0])
def test_dictionary_condition_number(cond):
  a = sparse.gaussian_dictionary(100, 200, seed=0, cond=cond)
  np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-5)
  assert abs(np.linalg.cond(a) / cond - 1.0) < 0.1
  with pytest.raises(ValueError, match="cond >= 1"):
    sparse.gaussian_dictionary(10, 20, cond=0.5)
