"""Finite without the safeguard: every shipped learned optimizer, and every
architecture at its initial θ, gives finite updates wherever ``optax.adam`` does, on
gradients that are huge (1e30), tiny (1e-30), constant (a linear objective, 200
steps), all zero, sparse (mostly zeros, a few large entries) or one huge spike."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt import lopt
from metaopt.lopt import io
from tasks.base import ParamInfo

STEPS = 200
CASES = ("huge", "tiny", "constant", "zero", "sparse", "spike", "normal")
INFO = {"w": ParamInfo("hidden", fan_in=8, fan_out=16), "b": ParamInfo("bias", fan_out=16),
        "s": ParamInfo("scalar")}
_SMALL = {"hypernet": {"lstm_hidden": 4, "num_mlps": 2, "mlp_hidden": 2}}


def init_params():
  return {"w": 0.1 * jax.random.normal(jax.random.PRNGKey(0), (8, 16)),
          "b": jnp.zeros((16,)), "s": jnp.ones(())}


def gradients():
  """``(len(CASES), STEPS) + shape`` gradients per leaf, in the order of ``CASES``."""
  def leaf(shape, salt):
    size = int(np.prod(shape))
    t = np.arange(STEPS)[:, None]
    idx = np.arange(size)[None, :]
    rng = np.random.default_rng(salt)
    sparse = np.where((idx + 7 * t + salt) % 37 == 0, 1e6, 0.0)
    spike = np.where(t == 3, 1e30, 0.01) * np.ones((1, size))
    cases = {"huge": np.full((STEPS, size), 1e30), "tiny": np.full((STEPS, size), 1e-30),
             "constant": np.ones((STEPS, size)), "zero": np.zeros((STEPS, size)),
             "sparse": sparse, "spike": spike, "normal": rng.normal(size=(STEPS, size))}
    return jnp.asarray(np.stack([cases[c] for c in CASES]).reshape(
        (len(CASES), STEPS) + shape), jnp.float32)
  return {"w": leaf((8, 16), 1), "b": leaf((16,), 2), "s": leaf((), 3)}


def finite_steps(opt) -> np.ndarray:
  """``(len(CASES),)`` number of steps before the first non-finite update or param."""
  def run(grads):
    def body(carry, g):
      params, state = carry
      value = sum(jnp.sum(p) for p in jax.tree_util.tree_leaves(params))
      updates, state = opt.update(g, state, params, value=value)
      params = optax.apply_updates(params, updates)
      ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in
                              jax.tree_util.tree_leaves((updates, params))]))
      return (params, state), ok
    params = init_params()
    _, ok = jax.lax.scan(body, (params, opt.init(params)), grads)
    return jnp.sum(jnp.cumprod(ok))
  return np.asarray(jax.jit(jax.vmap(run))(gradients()))


_ADAM = None


def adam_finite():
  global _ADAM
  if _ADAM is None:
    _ADAM = finite_steps(optax.adam(1e-3)) == STEPS
  return _ADAM


def check(opt, name):
  steps = finite_steps(opt)
  bad = [f"{c} (non-finite at step {s})" for c, s, a in zip(CASES, steps, adam_finite())
         if a and s < STEPS]
  assert not bad, f"{name}: optax.adam stays finite, this does not: {bad}"


def test_adam_is_finite_on_every_case():
  assert adam_finite().all(), dict(zip(CASES, adam_finite()))


@pytest.mark.parametrize("name", io.pretrained_names())
def test_shipped(name):
  lopt_def, _, _ = io.load_meta_params(name)
  info = INFO if getattr(lopt_def.config, "mup", False) else None
  check(metaopt.load(name, param_info=info), name)


@pytest.mark.parametrize("arch", sorted(lopt.arch_names()))
def test_architecture_at_init(arch):
  opt_def = lopt.build(arch, _SMALL.get(arch))
  theta = opt_def.init_meta_params(jax.random.PRNGKey(1))
  check(opt_def.transform(theta, param_info=INFO), arch)
