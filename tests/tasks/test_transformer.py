"""Transformer LM task: causality, attention against numpy, batches, param_info, family."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tasks import transformer
from tasks.base import SPLITS

# A learnable byte stream: a repeated phrase with random characters mixed in.
_rng = np.random.default_rng(0)
_TEXT = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 60, np.uint8).copy()
_TEXT[_rng.random(_TEXT.size) < 0.05] = 63
DATA = {s: {"tokens": jnp.asarray(_TEXT)} for s in SPLITS}
CFG = dict(d_model=16, num_layers=1, num_heads=2, seq_len=12, batch_size=8)


def _small_task():
  return transformer.transformer_task(data=DATA, **CFG)


def test_attention_matches_numpy_and_is_causal():
  task = _small_task()
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  p = params["block_0"]["attn"]
  x = np.random.default_rng(1).normal(size=(2, 5, 16)).astype(np.float32)
  got = jax.jit(transformer._attention, static_argnums=2)(p, x, 2)
  xn, wqkv, wo = (np.asarray(a, np.float64) for a in (x, p["wqkv"], p["wo"]))
  q, k, v = np.split(xn @ wqkv, 3, axis=-1)
  out = np.zeros_like(xn)
  for b in range(2):
    for h in range(2):
      sl = slice(8 * h, 8 * h + 8)
      for t in range(5):
        s = q[b, t, sl] @ k[b, :t + 1, sl].T / math.sqrt(8)
        w = np.exp(s - s.max())
        out[b, t, sl] = (w / w.sum()) @ v[b, :t + 1, sl]
  np.testing.assert_allclose(got, out @ wo, rtol=1e-4, atol=1e-5)
  # Changing a later token leaves earlier logits unchanged.
  batch = task.sample_batch(jax.random.PRNGKey(0))
  tokens = batch["inputs"]
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % 128)
  cfg = transformer.TransformerConfig(16, 1, 2, 12)
  forward = jax.jit(transformer.transformer_forward, static_argnums=2)
  a, b = forward(params, tokens, cfg), forward(params, changed, cfg)
  np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-6)
  assert not np.allclose(a[:, 6:], b[:, 6:])


def test_batches_are_shifted_windows():
  task = _small_task()
  batch = task.sample_batch(jax.random.PRNGKey(3), "outer_valid")
  assert jax.tree.map(lambda x: (x.shape, x.dtype), batch) == jax.tree.map(
      lambda x: (x.shape, x.dtype), task.abstract_batch)
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  text = bytes(_TEXT)
  for row_in, row_t in zip(np.asarray(batch["inputs"]), np.asarray(batch["targets"])):
    window = bytes(np.concatenate([row_in, row_t[-1:]]).astype(np.uint8))
    assert window in text


def test_param_info_roles_and_init_loss():
  task = _small_task()
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  info = task.param_info(params)
  assert info["embed"]["w"] == transformer.ParamInfo("input", 128, 16)
  assert info["block_0"]["attn"]["wqkv"] == transformer.ParamInfo("hidden", 16, 48)
  assert info["block_0"]["mlp"]["w2"] == transformer.ParamInfo("hidden", 64, 16)
  assert info["unembed"]["w"] == transformer.ParamInfo("output", 16, 128)
  assert info["block_0"]["ln1"]["scale"].role == "bias"
  assert task.metadata["num_params"] == sum(x.size for x in jax.tree.leaves(params))
  loss = jax.jit(task.loss)(params, task.sample_batch(jax.random.PRNGKey(0)), None)
  assert abs(float(task.normalize_loss(loss)) - 1.0) < 0.1  # Near chance at init.


def test_loss_decreases_with_adam():
  task = _small_task()
  opt = optax.adam(1e-2)

  @jax.jit
  def run(key):
    params = task.init(key)

    def step(carry, k):
      params, state = carry
      loss, g = jax.value_and_grad(task.loss)(params, task.batch(task.data, k, "train"), k)
      updates, state = opt.update(g, state, params)
      return (optax.apply_updates(params, updates), state), loss

    return jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 40))[1]

  losses = np.asarray(run(jax.random.PRNGKey(1)))
  assert np.all(np.isfinite(losses))
  assert losses[-5:].mean() < 0.8 * losses[:5].mean()


@pytest.mark.slow  # The registry-wide family test covers the vmap; this one is ~5 s.
def test_family_vmaps():
  fam = transformer.transformer_family(data=DATA, d_models=(16,), layer_choices=(1,),
                                       num_heads=2, seq_len=12, batch_size=8)
  cfg = fam.sample_batch(jax.random.PRNGKey(0), 3)
  assert cfg.static == fam.sample_batch(jax.random.PRNGKey(0), 3).static

  @jax.jit
  def run(dynamic, key):
    def one(dyn):
      task = fam.make_task(cfg.static, dyn)
      params = task.init(key)
      loss, g = jax.value_and_grad(task.loss)(params, task.batch(task.data, key, "train"), key)
      return loss, optax.tree.norm(g)
    return jax.vmap(one)(dynamic)

  loss, gnorm = run(cfg.dynamic, jax.random.PRNGKey(1))
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(gnorm))
  assert len(np.unique(np.asarray(loss))) == 3
