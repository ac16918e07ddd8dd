"""LISTA / LISTA-CP / ALISTA: ISTA equivalence at init, ALISTA weight, and the
learned-beats-ISTA/FISTA claim on held-out instances (small problem, short training)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.amortized import lista, solvers
from tasks import sparse


@pytest.fixture(scope="module")
def problem():
  return sparse.lasso(m=64, n=128, p=0.1, snr=40.0, lam=0.1)


@pytest.fixture(scope="module")
def test_set(problem):
  return problem.sample_batch(problem.split_key(jax.random.PRNGKey(0), "test"), 256)


@pytest.mark.parametrize("variant", ["lista", "lista_cp"])
def test_init_equals_ista(problem, test_set, variant):
  """At initialization LISTA(-CP) is exactly K ISTA iterations with lam = problem.l1."""
  params = lista.init_params(problem, variant, 5)
  xs = lista.apply(params, variant, problem.data["A"], test_set["y"][:8])
  ref = jax.vmap(lambda i: solvers.ista(problem, i, 5))(
      jax.tree_util.tree_map(lambda a: a[:8], test_set))
  np.testing.assert_allclose(xs, jnp.swapaxes(ref, 0, 1), atol=1e-5)


def test_alista_weight_solves_frobenius_problem():
  a = jnp.asarray(sparse.gaussian_dictionary(10, 30, seed=1))
  w = lista.alista_weight(a)
  np.testing.assert_allclose(jnp.sum(w * a, axis=0), 1.0, atol=1e-5)  # diag(W'A) = 1
  # Optimality: any feasible perturbation (d with d'a_i = 0) raises ||W'A||_F.
  obj = lambda w: float(jnp.sum((w.T @ a) ** 2))
  rng = np.random.default_rng(0)
  for _ in range(5):
    d = rng.normal(size=w.shape).astype(np.float32)
    d -= a * (np.sum(d * a, 0) / np.sum(a * a, 0))  # project onto d_i'a_i = 0
    assert obj(w + 0.01 * d) > obj(w)
  with pytest.raises(ValueError, match="m <= n"):
    lista.alista_weight(a.T)


@pytest.mark.parametrize("variant,steps", [
    ("alista", 300), pytest.param("lista_cp", 300, marks=pytest.mark.slow)])
def test_learned_beats_ista_and_fista(problem, test_set, variant, steps):
  k = 16
  result = lista.train(problem, lista.LISTAConfig(variant=variant, num_layers=k,
                                                  steps=steps, batch_size=64))
  learned = lista.evaluate(problem, result, test_set)
  assert learned.shape == (k + 1,)
  base = {}
  for name in ("ista", "fista"):
    xs = jax.vmap(lambda i: solvers.SOLVERS[name](problem, i, k))(test_set)
    base[name] = float(solvers.nmse_db(jnp.swapaxes(xs, 0, 1)[-1], test_set["x_true"]))
  # Measured on this setup: ISTA about -5 dB, FISTA about -9 dB, learned < -14 dB.
  assert learned[-1] < base["fista"] - 3.0, (learned[-1], base)
  assert learned[-1] < base["ista"] - 6.0, (learned[-1], base)


@pytest.mark.slow
def test_same_seed_same_result(problem):
  cfg = lista.LISTAConfig(variant="alista", num_layers=2, steps=3, batch_size=8)
  r1, r2 = lista.train(problem, cfg), lista.train(problem, cfg)
  np.testing.assert_array_equal(r1.losses, r2.losses)


def test_bad_config_and_problem():
  with pytest.raises(ValueError, match="known"):
    lista.LISTAConfig(variant="lista_ss")
  with pytest.raises(ValueError, match="ground-truth"):
    lista.train(sparse.l1_logreg(d=5, num_samples=10), lista.LISTAConfig(steps=1))
