"""Estimator correctness against exact meta-gradients (full backprop, float64).

On a fixed quadratic task trained by heavy-ball SGD with meta-learned lr and momentum,
the exact meta-gradient of the sum of truncation losses is computed by an independent
plain-Python unroll differentiated with ``jax.grad``. Averaged over thousands of
antithetic perturbations, ES and PES must match it; TBPTT, which ignores how theta
shaped the state a truncation starts from, must not (over several truncations).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.meta import estimators as E
from metaopt.meta.truncation import TruncationSchedule
from metaopt.meta.unroll import InnerProblem
from tests.meta.helpers import DIAG, LrMomentum, quadratic_family

K = 5          # truncation length
N = 4          # truncations
SIGMA = 0.01
# Relative error ||estimate - exact|| / ||exact|| allowed for ES/PES averaged over
# NUM_PERTURBATIONS antithetic pairs (observed ~3%; Monte-Carlo noise ~ 1/sqrt(T)).
TOL = 0.1
NUM_PERTURBATIONS = 8192


def exact_total_grad(theta, num_steps, horizon):
  """d/dtheta of sum over truncations of the mean per-step loss, with restarts to
  x0 = 1 every ``horizon`` steps (independent of metaopt.meta)."""

  def total(th):
    d = jnp.asarray(DIAG)
    lr, beta = jnp.exp(th["log_lr"]), jax.nn.sigmoid(th["logit_momentum"])
    x, m, tot = jnp.ones(4), jnp.zeros(4), 0.0
    for t in range(num_steps):
      if t and t % horizon == 0:
        x, m = jnp.ones(4), jnp.zeros(4)
      g = d * x
      tot = tot + 0.5 * jnp.sum(d * x**2) / K
      m = beta * m + g
      x = x - lr * m
    return tot

  return jax.grad(total)(theta)


def run_estimator(name, horizon, num_tasks, truncations):
  lopt = LrMomentum(init_log_lr=-1.5, init_logit_momentum=1.0)
  theta = lopt.init_meta_params(None)
  problem = InnerProblem(quadratic_family(), None, lopt,
                         TruncationSchedule("constant", K, horizon, random_offsets=False))
  est = E.build_estimator(name, problem, num_tasks, sigma=SIGMA)
  ws = est.init_worker_state(theta, jax.random.PRNGKey(0))
  step = jax.jit(est.compute_gradient)
  total = jax.tree_util.tree_map(jnp.zeros_like, theta)
  for n in range(truncations):
    g, ws, metrics = step(theta, ws, {}, jax.random.PRNGKey(100 + n))
    total = jax.tree_util.tree_map(jnp.add, total, g)
  return theta, total, metrics


def rel_err(a, b):
  a = np.array([a["log_lr"], a["logit_momentum"]])
  b = np.array([b["log_lr"], b["logit_momentum"]])
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("horizon", [N * K, 7])
def test_pes_unbiased_where_tbptt_is_biased(horizon):
  """Horizon 20: one run over 4 truncations. Horizon 7: runs restart inside
  truncations, which exercises the accumulator reset and the loss split."""
  with jax.enable_x64(True):
    theta, pes, _ = run_estimator("pes", horizon, NUM_PERTURBATIONS, N)
    _, tbptt, _ = run_estimator("tbptt", horizon, 1, N)
    exact = exact_total_grad(theta, N * K, horizon)
  assert rel_err(pes, exact) < TOL, (pes, exact)
  assert rel_err(tbptt, exact) > 3 * TOL, (tbptt, exact)


@pytest.mark.parametrize("horizon", [N * K, 7])
def test_nres_unbiased(horizon):
  """Noise reuse: one perturbation per run (horizon 7: runs restart inside truncations
  and switch to their successor's perturbation there)."""
  with jax.enable_x64(True):
    theta, nres, _ = run_estimator("nres", horizon, NUM_PERTURBATIONS, N)
    exact = exact_total_grad(theta, N * K, horizon)
  assert rel_err(nres, exact) < TOL, (nres, exact)


def test_nres_has_lower_variance_than_pes_late_in_a_run():
  """The estimate of one truncation (what an outer step uses), 4 truncations into a
  run: PES multiplies by its growing sum of perturbations, NRES by one (Li et al. 2023)."""
  def spread(name):
    with jax.enable_x64(True):
      lopt = LrMomentum(init_log_lr=-1.5, init_logit_momentum=1.0)
      theta = lopt.init_meta_params(None)
      problem = InnerProblem(quadratic_family(), None, lopt,
                             TruncationSchedule("constant", K, N * K, random_offsets=False))
      est = E.build_estimator(name, problem, 1, sigma=SIGMA)
      step = jax.jit(est.compute_gradient)

      def last(seed):
        ws = est.init_worker_state(theta, jax.random.PRNGKey(seed))
        for n in range(N):
          g, ws, _ = step(theta, ws, {}, jax.random.PRNGKey(1000 * seed + n))
        return np.array([g["log_lr"], g["logit_momentum"]])

      samples = np.stack([last(s) for s in range(200)])
    return np.sum(np.var(samples, axis=0))

  nres, pes = spread("nres"), spread("pes")
  assert nres < 0.8 * pes, (nres, pes)


def test_tbptt_and_es_exact_for_one_truncation():
  with jax.enable_x64(True):
    theta, tbptt, _ = run_estimator("tbptt", N * K, 2, 1)
    _, es, _ = run_estimator("es", N * K, NUM_PERTURBATIONS, 1)
    exact = exact_total_grad(theta, K, N * K)
  assert rel_err(tbptt, exact) < 1e-6  # float32 loss weights
  assert rel_err(es, exact) < TOL, (es, exact)


@pytest.mark.slow
def test_full_es_matches_backprop_of_whole_run():
  with jax.enable_x64(True):
    lopt = LrMomentum(init_log_lr=-1.5, init_logit_momentum=1.0)
    theta = lopt.init_meta_params(None)
    problem = InnerProblem(quadratic_family(), None, lopt,
                           TruncationSchedule("constant", K, N * K, random_offsets=False))
    est = E.FullES(problem, NUM_PERTURBATIONS, SIGMA, "avg")
    g, _, _ = jax.jit(est.compute_gradient)(theta, (), {}, jax.random.PRNGKey(3))
    # Mean loss over N*K steps = (sum of truncation means) / N.
    exact = jax.tree_util.tree_map(lambda x: x / N, exact_total_grad(theta, N * K, N * K))
  assert rel_err(g, exact) < TOL, (g, exact)


@pytest.mark.parametrize("name", ["pes", "nres", pytest.param("tbptt", marks=pytest.mark.slow),
                                  pytest.param("es", marks=pytest.mark.slow),
                                  pytest.param("full_es", marks=pytest.mark.slow)])
def test_diverging_tasks_are_excluded_and_counted(name):
  """A quarter of the tasks blow up; theta's gradient stays finite and the
  divergences are counted and reset."""
  lopt = LrMomentum(init_log_lr=0.0, init_logit_momentum=-3.0)
  theta = lopt.init_meta_params(None)
  family = quadratic_family(fixed=False, diverge_scale=1e30)
  problem = InnerProblem(family, None, lopt, TruncationSchedule("constant", K, 10))
  est = E.build_estimator(name, problem, 16, sigma=SIGMA)
  ws = est.init_worker_state(theta, jax.random.PRNGKey(0))
  step = jax.jit(est.compute_gradient)
  resets = 0.0
  for n in range(3):
    g, ws, m = step(theta, ws, {}, jax.random.PRNGKey(n))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(g))
    assert 0.0 < float(m["valid_fraction"]) < 1.0
    assert np.isfinite(float(m["meta_loss"]))
    resets += float(m["num_nan_resets"])
  assert resets > 0


def test_mixed_estimator_is_normalized_weighted_sum():
  """Weights (1, 3) act as (1/4, 3/4) on both the gradient and the meta-loss."""
  lopt = LrMomentum()
  theta = lopt.init_meta_params(None)
  problem = InnerProblem(quadratic_family(), None, lopt,
                         TruncationSchedule("constant", K, 20, random_offsets=False))
  a, b = E.TruncatedBackprop(problem, 4), E.PES(problem, 4, SIGMA)
  mix = E.MixedEstimator([a, b], [1.0, 3.0])
  key = jax.random.PRNGKey(0)
  ws = mix.init_worker_state(theta, key)
  g, _, m = jax.jit(mix.compute_gradient)(theta, ws, {}, key)
  ka, kb = jax.random.split(key)
  ga, _, ma = jax.jit(a.compute_gradient)(theta, ws[0], {}, ka)
  gb, _, mb = jax.jit(b.compute_gradient)(theta, ws[1], {}, kb)
  for name in theta:
    np.testing.assert_allclose(g[name], 0.25 * ga[name] + 0.75 * gb[name], rtol=1e-5)
  np.testing.assert_allclose(m["meta_loss"], 0.25 * ma["meta_loss"] + 0.75 * mb["meta_loss"],
                             rtol=1e-5)
  assert m["inner_steps"] == 4 * K + 2 * 4 * K


def test_unknown_estimator_lists_known():
  lopt = LrMomentum()
  problem = InnerProblem(quadratic_family(), None, lopt, TruncationSchedule())
  with pytest.raises(ValueError, match="Did you mean pes.*Known: es, full_es, nres, pes, tbptt"):
    E.build_estimator("pse", problem, 4)
  with pytest.raises(ValueError, match="Unknown full-ES loss 'mean'"):
    E.build_estimator("full_es", problem, 4, full_es_loss="mean")


def test_build_estimator_passes_each_class_its_options():
  problem = InnerProblem(quadratic_family(), None, LrMomentum(), TruncationSchedule())
  assert set(E.ESTIMATORS) == {"tbptt", "es", "pes", "full_es", "nres"}
  built = {n: E.build_estimator(n, problem, 3, sigma=0.5, full_es_loss="min")
           for n in E.ESTIMATORS}
  for name, est in built.items():
    assert type(est) is E.ESTIMATOR_CLASSES.get(name) and est.name == name
    assert est.num_tasks == 3
  assert {built[n].sigma for n in ("es", "pes", "nres", "full_es")} == {0.5}
  assert built["full_es"].loss_type == "min"
