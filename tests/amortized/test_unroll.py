"""Truncated-backprop training of math_l2o on composite problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import lopt
from metaopt.amortized import solvers, unroll
from tasks import sparse


def test_rollout_with_zero_readout_is_ista():
  """math_l2o with a zero readout and no acceleration is ISTA with step lr = 1/L."""
  pb = sparse.lasso(m=16, n=32, p=0.2, lam=0.05)
  opt = unroll.math_l2o_for(pb, num_probe=2, acceleration=False, net="mlp")
  assert opt.config.l1_strength == pb.l1
  theta = opt.init_meta_params(jax.random.PRNGKey(0))
  theta["readout"] = jax.tree_util.tree_map(jnp.zeros_like, theta["readout"])
  insts = pb.sample_batch(jax.random.PRNGKey(1), 4)
  f = unroll.rollout(pb, opt, theta, insts, 10)
  xs = jax.vmap(lambda i: solvers.ista(pb, i, 10))(insts)
  ref = jax.vmap(lambda x, i: jax.vmap(lambda xx: pb.objective(xx, i))(x))(xs, insts)
  np.testing.assert_allclose(f, ref.T, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_improves_on_init_and_generalizes_to_longer_horizon():
  pb = sparse.l1_logreg(d=10, num_samples=20, lam=0.01, scale_decades=2.0)
  opt = unroll.math_l2o_for(pb, hidden=8, num_layers=1)
  cfg = unroll.UnrollConfig(horizon=20, truncation=10, meta_steps=20, batch_size=8,
                            learning_rate=3e-3)
  result = unroll.train(pb, opt, cfg)
  assert np.all(np.isfinite(result.losses))
  test = pb.sample_batch(pb.split_key(jax.random.PRNGKey(0), "test"), 32)
  f_star = jax.vmap(pb.objective)(
      jax.vmap(lambda i: solvers.reference_solution(pb, i, 5000))(test), test)
  gap = lambda th: np.asarray(jnp.mean(unroll.rollout(pb, opt, th, test, 200) - f_star, 1))
  init, learned = gap(opt.init_meta_params(jax.random.PRNGKey(cfg.seed))), gap(result.theta)
  # Better than the (ISTA-like) initial rule at the training horizon, and still
  # converging (no blow-up) over a 10x longer horizon.
  assert learned[20] < init[20]
  assert learned[200] < learned[20] and np.all(np.isfinite(learned))


def test_config_and_l1_mismatch_errors():
  with pytest.raises(ValueError, match="divide"):
    unroll.UnrollConfig(horizon=100, truncation=30)
  pb = sparse.lasso(m=8, n=16, lam=0.1)
  opt = lopt.build("math_l2o", {"l1_strength": 0.5})
  with pytest.raises(ValueError, match="math_l2o_for"):
    unroll.rollout(pb, opt, opt.init_meta_params(jax.random.PRNGKey(0)),
                   pb.sample_batch(jax.random.PRNGKey(0), 2), 3)
