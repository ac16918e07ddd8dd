"""Learnable Adam equals optax.adam; its meta-gradient flows to the hyper-parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from metaopt.lopt import adam


@pytest.mark.parametrize("hp", [(1e-3, 0.9, 0.999, 1e-8), (0.05, 0.5, 0.9, 1e-3)])
def test_matches_optax_adam(hp):
  opt = lopt.build("adam", dict(zip(("learning_rate", "b1", "b2", "eps"), hp)))
  ours = opt.transform(opt.init_meta_params(jax.random.PRNGKey(0)))
  ref = optax.adam(*hp)
  rng = np.random.RandomState(0)
  params = {"w": jnp.asarray(rng.randn(3, 2), jnp.float32), "b": jnp.float32(0.3)}
  s1, s2 = ours.init(params), ref.init(params)

  @jax.jit
  def both(params, s1, s2, grads):
    u1, s1 = ours.update(grads, s1, params, value=jnp.float32(1.0))
    u2, s2 = ref.update(grads, s2, params)
    return u1, s1, u2, s2

  for _ in range(6):
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.randn(*p.shape), jnp.float32) * 3,
                                   params)
    u1, s1, u2, s2 = both(params, s1, s2, grads)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-9),
                           u1, u2)
    params = optax.apply_updates(params, u1)


def test_theta_round_trip_and_bad_hparams():
  lr, b1, b2, eps = adam.hparams_from_theta(adam.theta_from_hparams(3e-4, 0.8, 0.99, 1e-6))
  np.testing.assert_allclose([lr, b1, b2, eps], [3e-4, 0.8, 0.99, 1e-6], rtol=1e-5)
  with pytest.raises(ValueError, match="b1=1.0 must be in"):
    adam.theta_from_hparams(1e-3, 1.0, 0.999, 1e-8)


def test_meta_gradient_of_learning_rate():
  """d loss(after 1 step)/d log_lr on 0.5 x^2 equals the closed form: one Adam step
  moves x by -lr * g/(|g| + eps), so dL/dlog_lr = x1 * (-lr * sign(x0)) with eps tiny."""
  opt = lopt.build("adam", {"learning_rate": 0.1})

  def loss_after(theta, x0=jnp.float32(2.0)):
    tx = opt.transform(theta)
    u, _ = tx.update(x0, tx.init(x0))  # gradient of 0.5 x^2 is x
    return 0.5 * (x0 + u) ** 2

  theta = opt.init_meta_params(None)
  g = jax.grad(loss_after)(theta)
  x1 = 2.0 - 0.1
  np.testing.assert_allclose(g["log_lr"], x1 * -0.1, rtol=1e-4)
