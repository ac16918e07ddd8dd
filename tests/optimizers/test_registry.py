"""Baseline registry: each entry equals optax's own transform; errors; schedules and
the schedule family (warm-up fraction + decay) of AlgoPerf's baselines."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib

from metaopt import optimizers
from metaopt.optimizers import Choice, LogUniform, OneMinusLogUniform, Uniform

#: Training length given to every optimizer (nadamw's default schedule needs one).
TOTAL = 100

# The same optimizer written directly against optax with every default spelled out:
# an independent reference for the registry's builders and defaults.
REFERENCE = {
    "sgd": lambda: optax.sgd(0.1),
    "momentum": lambda: optax.chain(optax.add_decayed_weights(0.0),
                                    optax.sgd(0.01, momentum=0.9)),
    "nesterov": lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8),
    "adamw": lambda: optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
    # AlgoPerf's schedule: 5% of TOTAL linear warm-up from 0, cosine decay to 0.
    "nadamw": lambda: optax.nadamw(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 5, TOTAL),
                                   b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
    "lion": lambda: optax.lion(1e-4, b1=0.9, b2=0.99, weight_decay=1e-3),
    "adafactor": lambda: optax.adafactor(1e-2),
    "rmsprop": lambda: optax.rmsprop(1e-3, decay=0.9, eps=1e-8),
    "adagrad": lambda: optax.adagrad(1e-2),
    "lamb": lambda: optax.lamb(1e-3, weight_decay=0.0),
    "sophia": lambda: contrib.sophia(
        1e-3, weight_decay=1e-4,
        hessian_diagonal_fn=contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(0))),
    "muon": lambda: contrib.muon(0.02),
    "schedule_free_adamw": lambda: contrib.schedule_free_adamw(2.5e-3, weight_decay=0.0),
    "prodigy": lambda: contrib.prodigy(1.0),
    # AlgoPerf's self-tuning NAdamW: 2% of TOTAL warm-up, cosine decay to 0.
    "nadamw_self_tuning": lambda: optax.nadamw(
        optax.warmup_cosine_decay_schedule(0.0, 0.0017486387539278373, 2, TOTAL),
        b1=1 - 0.06733926164, b2=0.9955159689799007, eps=1e-8,
        weight_decay=0.08121616522670176),
    "dadapt_adamw": lambda: contrib.dadapt_adamw(1.0),
    "dog": lambda: contrib.dog(1.0),
    "dowg": lambda: contrib.dowg(1.0),
    "mechanic": lambda: optax.chain(contrib.mechanize(optax.adam(1e-3)), optax.scale(1.0)),
    "cocob": lambda: contrib.cocob(1.0),
}


def _pytree(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w": jax.random.normal(k1, (6, 5)), "b": jax.random.normal(k2, (5,)),
          "conv": jax.random.normal(k3, (2, 3, 4))}


def _obj_fn(params):
  # A non-quadratic objective so that Sophia's Hessian-vector products vary.
  return sum(jnp.sum(jnp.cosh(0.5 * x)) for x in jax.tree_util.tree_leaves(params))


def _run(tx, steps=3, seed=0, jit=False):
  """Updates of ``tx`` over ``steps`` steps with params moving along. Eager by
  default: the per-op programs are shared by all optimizers, which is cheaper on CPU
  than compiling a whole program per optimizer."""
  params = _pytree(jax.random.PRNGKey(seed))
  state = tx.init(params)
  update = jax.jit(tx.update, static_argnames="obj_fn") if jit else tx.update
  out = []
  for i in range(steps):
    grads = _pytree(jax.random.PRNGKey(100 + i))
    updates, state = update(grads, state, params, value=jnp.float32(i), obj_fn=_obj_fn)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


# Sophia's lax.cond around a Hessian-vector product is far slower eagerly.
_JIT = {"sophia"}


def test_every_registered_name_has_a_reference():
  assert sorted(REFERENCE) == optimizers.names()


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matches_optax(name):
  ours = _run(optimizers.get(name, total_steps=TOTAL), jit=name in _JIT)
  ref = _run(optax.with_extra_args_support(REFERENCE[name]()), jit=name in _JIT)
  for a, b in zip(ours, ref):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  # Not trivially equal because both are zero.
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree_util.tree_leaves(ours[-1]))


def test_hparams_reach_the_optimizer():
  ours = _run(optimizers.get("adam", learning_rate=0.3, b1=0.5))
  ref = _run(optax.with_extra_args_support(optax.adam(0.3, b1=0.5)))
  np.testing.assert_allclose(ours[-1]["w"], ref[-1]["w"], rtol=1e-6)
  default = _run(optimizers.get("adam"))
  assert not np.allclose(ours[-1]["w"], default[-1]["w"])


def test_specs_are_consistent():
  for name in optimizers.names():
    s = optimizers.spec(name)
    assert s.name == name
    assert "learning_rate" in s.search_space, name
    assert set(s.search_space) <= set(s.defaults)
    assert s.description
  assert optimizers.spec("prodigy").self_tuning
  assert not optimizers.spec("adam").self_tuning


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_search_space_samples_are_valid(name):
  space = optimizers.spec(name).search_space
  configs = optimizers.search_configs(name, method="random", num_trials=8, seed=1)
  grid = optimizers.search_configs(name, method="grid", grid_points=2)
  for cfg in configs + grid:
    for key, value in cfg.items():
      assert space[key].contains(value), (name, key, value)
    optimizers.get(name, total_steps=TOTAL, **cfg)  # Builds.
  # Stepping compiles, so only the grid's largest corner (most likely to misbehave).
  for updates in _run(optimizers.get(name, total_steps=TOTAL, **grid[-1]), steps=2,
                      jit=name in _JIT):
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(updates))


def test_axes():
  key = jax.random.PRNGKey(0)
  lu = LogUniform(1e-4, 1e-1)
  np.testing.assert_allclose(lu.grid(4), [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-6)
  samples = [lu.sample(k) for k in jax.random.split(key, 64)]
  assert all(1e-4 <= s <= 1e-1 for s in samples)
  # Log-uniform: about half the mass below the geometric mean 10**-2.5 (a uniform
  # sampler would put 3% there).
  assert 0.3 < np.mean(np.array(samples) < 10 ** -2.5) < 0.7
  assert Uniform(0.0, 1.0).grid(3) == [0.0, 0.5, 1.0]
  c = Choice([None, 0.9])
  assert c.grid(7) == [None, 0.9]
  assert {c.sample(k) for k in jax.random.split(key, 10)} == {None, 0.9}
  with pytest.raises(ValueError, match="0 < lo < hi"):
    LogUniform(0.0, 1.0)
  with pytest.raises(ValueError, match="at least one"):
    Choice([])
  # 1 - beta log-uniform: as many values in [0.9, 0.99] as in [0.5, 0.9] for (0.01, 0.5).
  om = OneMinusLogUniform(0.01, 0.5)
  np.testing.assert_allclose(om.grid(2), [0.99, 0.5])
  np.testing.assert_allclose([om.from_unit(0.0), om.from_unit(1.0)], [0.99, 0.5])
  betas = np.array([om.sample(k) for k in jax.random.split(key, 200)])
  assert all(om.contains(b) for b in betas) and not om.contains(0.995)
  split = 1 - 10 ** ((math.log10(0.01) + math.log10(0.5)) / 2)  # Geometric midpoint.
  assert 0.35 < np.mean(betas > split) < 0.65
  # from_unit is each axis's inverse CDF on [0, 1).
  np.testing.assert_allclose(LogUniform(1e-4, 1e-2).from_unit(0.5), 1e-3)
  assert Uniform(2.0, 4.0).from_unit(0.25) == 2.5
  assert [Choice("abc").from_unit(u) for u in (0.0, 0.34, 0.67, 0.999)] == list("abcc")


def test_unknown_optimizer_lists_close_matches():
  with pytest.raises(KeyError) as e:
    optimizers.get("adma")
  msg = str(e.value)
  assert "Unknown optimizer 'adma'" in msg and "Did you mean adam" in msg
  assert "sophia" in msg  # The full list of known names.


def test_unknown_hparam_lists_valid_ones():
  with pytest.raises(ValueError) as e:
    optimizers.get("adam", beta1=0.9)
  assert "beta1" in str(e.value) and "'b1'" in str(e.value)


def test_bad_learning_rate():
  with pytest.raises(ValueError, match="positive finite"):
    optimizers.get("sgd", learning_rate=-1.0)
  with pytest.raises(ValueError, match="positive finite"):
    optimizers.get("sgd", learning_rate=float("nan"))


def test_schedules_match_closed_form():
  lr, total = 0.5, 20
  sched = optimizers.make_schedule(lr, "cosine", total)
  for t in (0, 5, 10, 20):
    np.testing.assert_allclose(sched(t), lr * 0.5 * (1 + math.cos(math.pi * t / total)),
                               atol=1e-7)
  warm = optimizers.make_schedule(lr, "warmup_cosine", total, warmup_steps=4)
  np.testing.assert_allclose([warm(0), warm(2), warm(4)], [0.0, lr / 2, lr], atol=1e-7)
  np.testing.assert_allclose(warm(total), 0.0, atol=1e-7)
  assert optimizers.make_schedule(lr, "constant") == lr


def test_schedule_is_applied_to_any_optimizer():
  # SGD with a cosine schedule: the update at step t is -lr_t * g exactly.
  lr, total = 0.5, 8
  tx = optimizers.get("sgd", learning_rate=lr, schedule="cosine", total_steps=total)
  params = {"x": jnp.ones(3)}
  state = tx.init(params)
  for t in range(3):
    g = {"x": jnp.full(3, 2.0)}
    updates, state = tx.update(g, state, params)
    expected = -lr * 0.5 * (1 + math.cos(math.pi * t / total)) * 2.0
    np.testing.assert_allclose(updates["x"], expected, rtol=1e-6)
  # Adam too (lr enters as the last scale).
  tx = optimizers.get("adam", schedule="warmup_cosine", total_steps=10, warmup_steps=2)
  updates, _ = tx.update({"x": jnp.ones(3)}, tx.init(params), params)
  np.testing.assert_allclose(updates["x"], 0.0)  # Warm-up starts at lr 0.


@pytest.mark.parametrize("decay", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup_fraction", [0.0, 0.1])
def test_schedule_family_matches_optax(decay, warmup_fraction):
  lr, total = 0.5, 40
  warm = int(round(warmup_fraction * total))
  decay_steps = total - warm
  after = {"constant": optax.constant_schedule(lr),
           "cosine": optax.cosine_decay_schedule(lr, decay_steps),
           "linear": optax.linear_schedule(lr, 0.0, decay_steps)}[decay]
  ref = optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])
  ours = optimizers.warmup_decay_schedule(lr, total, warmup_fraction, decay)
  steps = np.arange(total + 3)
  np.testing.assert_allclose([ours(t) for t in steps], [ref(t) for t in steps], atol=1e-6)
  # Traced under vmap (one program for a sweep over warm-up fractions and rates).
  sweep = jax.vmap(lambda a, w: optimizers.warmup_decay_schedule(a, total, w, decay)(7))(
      jnp.asarray([lr, 2 * lr]), jnp.asarray([warmup_fraction, warmup_fraction]))
  np.testing.assert_allclose(sweep, [ref(7), 2 * ref(7)], rtol=1e-5, atol=1e-7)
  # A schedule as the peak rate is multiplied by the family's factor.
  halved = optimizers.warmup_decay_schedule(lambda t: 0.5 * lr, total, warmup_fraction, decay)
  np.testing.assert_allclose(halved(7), 0.5 * ref(7), rtol=1e-6, atol=1e-7)


def test_schedule_family_through_get():
  # adam with decay="cosine": optax.adam on optax's cosine schedule.
  ours = _run(optimizers.get("adam", lr_decay="cosine", total_steps=4, learning_rate=0.1))
  ref = _run(optax.with_extra_args_support(optax.adam(optax.cosine_decay_schedule(0.1, 4))))
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-7)
  # A learning-rate x warm-up sweep as one vmapped program (inject_hyperparams).
  def updates(lr, wf):
    tx = optax.inject_hyperparams(
        lambda learning_rate, warmup_fraction: optimizers.get(
            "nadamw", total_steps=10, learning_rate=learning_rate,
            warmup_fraction=warmup_fraction))(learning_rate=lr, warmup_fraction=wf)
    params = {"x": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(3):
      u, state = tx.update({"x": jnp.full(3, 0.5)}, state, params)
    return u["x"]
  swept = jax.jit(jax.vmap(updates))(jnp.asarray([1e-2, 1e-2]), jnp.asarray([0.0, 0.5]))
  np.testing.assert_allclose(swept[0], updates(1e-2, 0.0), rtol=1e-5)
  # Warm-up of 5 steps: step 2 runs at 2/5 of the rate, well below the no-warm-up run.
  assert float(jnp.abs(swept[1]).max()) < 0.6 * float(jnp.abs(swept[0]).max())


def test_schedule_family_errors():
  with pytest.raises(ValueError, match="total_steps"):
    optimizers.get("nadamw")  # Its default schedule needs the training length.
  with pytest.raises(ValueError, match="not both"):
    optimizers.get("adam", schedule="cosine", lr_decay="linear", total_steps=10)
  with pytest.raises(ValueError, match="Did you mean cosine"):
    optimizers.get("adam", lr_decay="cosin", total_steps=10)
  with pytest.raises(ValueError, match=r"warmup_fraction must be in \[0, 1\)"):
    optimizers.get("adam", warmup_fraction=1.5, total_steps=10)
  with pytest.raises(ValueError, match="schedule hyper-parameters"):
    optimizers.BaselineSpec("bad", lambda **kw: optax.sgd(0.1),
                            {"learning_rate": 0.1, "warmup_fraction": 0.0, "lr_decay": "cosine"},
                            {}, schedulable=False)
  # The constant default needs no training length; schedule= still overrides it.
  optimizers.get("adam")
  optimizers.get("nadamw", schedule="constant")


def test_algoperf_baselines_search_the_schedule_family():
  for name in ("momentum", "adam", "adamw", "nadamw"):
    space = optimizers.spec(name).search_space
    assert set(space["lr_decay"].options) == set(optimizers.DECAYS), name
    assert space["warmup_fraction"].contains(0.0) and space["warmup_fraction"].contains(0.1)
    assert isinstance(space["learning_rate"], LogUniform), name


def test_schedule_errors():
  with pytest.raises(ValueError, match="total_steps"):
    optimizers.get("adam", schedule="cosine")
  with pytest.raises(ValueError, match="Did you mean cosine"):
    optimizers.get("adam", schedule="cosin", total_steps=10)
  with pytest.raises(ValueError, match="constant learning rate"):
    optimizers.get("schedule_free_adamw", schedule="cosine", total_steps=10)


def test_parse_hparams():
  assert optimizers.parse_hparams(["b1=0.95", "nesterov=True", "momentum=none",
                                   "betas=(0.9, 0.99)", "name=foo"]) == {
                                       "b1": 0.95, "nesterov": True, "momentum": None,
                                       "betas": (0.9, 0.99), "name": "foo"}
  with pytest.raises(ValueError, match="name=value"):
    optimizers.parse_hparams(["b1"])
