"""LISTA / LISTA-CP / LISTA-CPSS / ALISTA: ISTA equivalence at init, ALISTA weight,
support selection against numpy, stage-wise vs end-to-end training, and the
learned-beats-ISTA/FISTA claim on held-out instances (small problem, short training)."""

import ast
import dataclasses
import os

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
                                                  training="end_to_end", steps=steps,
                                                  batch_size=64))
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
  cfg = lista.LISTAConfig(variant="alista", num_layers=2, training="end_to_end", steps=3,
                          batch_size=8)
  r1, r2 = lista.train(problem, cfg), lista.train(problem, cfg)
  np.testing.assert_array_equal(r1.losses, r2.losses)


def _numpy_support_select(v, theta, count):
  """Independent reference: per row, the ``count`` largest |v| above theta pass."""
  out = np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)
  for i, row in enumerate(v):
    top = np.argsort(-np.abs(row))[:count]
    top = top[np.abs(row[top]) > theta]
    out[i, top] = row[top]
  return out


@pytest.mark.parametrize("count", [0, 1, 5, 13])
def test_support_select_matches_numpy(count):
  v = np.random.default_rng(count).normal(size=(6, 40)).astype(np.float32)
  theta = 0.3
  got = lista.support_select(jnp.asarray(v), theta, jnp.int32(count))
  np.testing.assert_allclose(got, _numpy_support_select(v, theta, count), atol=1e-6)
  # Entries below theta are zeroed even if selected (count = 40: all "selected").
  all_sel = np.asarray(lista.support_select(jnp.asarray(v), theta, 40))
  np.testing.assert_array_equal(all_sel[np.abs(v) <= theta], 0.0)


def test_support_counts_grow_then_saturate():
  c = lista.support_counts(16, 500, 0.012, 0.13)
  np.testing.assert_array_equal(c[:3], [6, 12, 18])
  assert c[-1] == 65 and np.all(np.diff(c) >= 0)


def test_apply_with_support_selection_matches_layerwise_numpy(problem, test_set):
  """A 3-layer LISTA-CPSS network against a numpy loop of the same layer equations."""
  params = lista.init_params(problem, "lista_cpss", 3)
  a = np.asarray(problem.data["A"], np.float64)
  y = np.asarray(test_set["y"][:5], np.float64)
  counts = lista.support_counts(3, a.shape[1], 0.05, 0.2)
  got = lista.apply(params, "lista_cpss", problem.data["A"], test_set["y"][:5],
                    ss_counts=counts)
  x = np.zeros((5, a.shape[1]))
  for k in range(3):
    w = float(params["gamma"][k]) * np.asarray(params["W"][k], np.float64)
    v = x + (y - x @ a.T) @ w
    x = _numpy_support_select(v, float(params["theta"][k]), int(counts[k]))
    np.testing.assert_allclose(got[k + 1], x, atol=1e-4)


@pytest.mark.slow
def test_stagewise_beats_end_to_end_at_equal_steps():
  """Stage-wise training (the papers' schedule) reaches a lower NMSE at the output
  layer than end-to-end training given the same number of gradient steps (measured:
  -22.1 vs -20.5 dB; ~70 s on a loaded 2-core CPU)."""
  pb = sparse.lasso(m=48, n=96, p=0.1, snr=float("inf"))
  test = pb.sample_batch(pb.split_key(jax.random.PRNGKey(1), "test"), 500)
  k = 8
  sw = lista.train(pb, lista.LISTAConfig(variant="alista", num_layers=k,
                                         training="stagewise", stage_steps=30,
                                         val_every=30, patience=0, val_size=256,
                                         learning_rate=1e-2))
  steps = len(sw.losses)
  assert steps == k * 3 * 30 and len(sw.stages) == k * 3
  assert [s["layer"] for s in sw.stages[:4]] == [1, 1, 1, 2]
  e2e = lista.train(pb, lista.LISTAConfig(variant="alista", num_layers=k,
                                          training="end_to_end", steps=steps))
  nm_sw = lista.evaluate(pb, sw, test)[-1]
  nm_e2e = lista.evaluate(pb, e2e, test)[-1]
  assert nm_sw < nm_e2e - 1.0, (nm_sw, nm_e2e)


def test_stagewise_first_stage_trains_only_the_new_layer(problem):
  """In the first stage of layer t the earlier layers stay exactly as they were."""
  cfg = lista.LISTAConfig(variant="alista", num_layers=2, training="stagewise",
                          stage_steps=5, val_every=5, val_size=16, batch_size=8,
                          stage_lr_decays=(1.0,))
  res = lista.train(problem, cfg)
  one = lista.train(problem, dataclasses.replace(cfg, num_layers=1))
  np.testing.assert_array_equal(res.params["theta"][:1], one.params["theta"])
  np.testing.assert_array_equal(res.params["gamma"][:1], one.params["gamma"])
  assert res.params["theta"][1] != res.params["theta"][0]


def test_initial_params_start_training_where_given(problem):
  """Zero steps return initial_params unchanged; wrong shapes are refused."""
  start = lista.init_params(problem, "alista", 3)
  start = {"gamma": start["gamma"] * 0.5, "theta": start["theta"] * 2.0}
  res = lista.train(problem, lista.LISTAConfig(variant="alista", num_layers=3,
                                               training="end_to_end", steps=0),
                    initial_params=start)
  np.testing.assert_array_equal(res.params["theta"], start["theta"])
  with pytest.raises(ValueError, match="initial_params"):
    lista.train(problem, lista.LISTAConfig(variant="alista", num_layers=4,
                                           training="end_to_end", steps=0),
                initial_params=start)


def test_bad_config_and_problem():
  with pytest.raises(ValueError, match="known"):
    lista.LISTAConfig(variant="lista_ss")
  with pytest.raises(ValueError, match="training"):
    lista.LISTAConfig(training="layerwise")
  with pytest.raises(ValueError, match="fractions"):
    lista.LISTAConfig(ss_p_step=1.2)
  for field in ("stage_steps", "val_every"):  # None is the recipe's; 0 is refused.
    with pytest.raises(ValueError, match="Stage-wise"):
      lista.LISTAConfig(**{field: 0})
  with pytest.raises(ValueError, match="ground-truth"):
    lista.train(sparse.l1_logreg(d=5, num_samples=10), lista.LISTAConfig(steps=1))


def test_stage_init_previous_starts_each_layer_from_the_one_before():
  """Copying the trained layer t-1 into layer t before its stage (thresholds already
  shrunk) beats starting every layer from its init at the same number of steps
  (measured: -3.6 vs -2.2 dB here; -7.6 vs -3.8 with six layers and longer stages);
  fine-tuning from initial_params ignores it."""
  pb = sparse.lasso(m=64, n=128, p=0.1, snr=float("inf"))
  test = pb.sample_batch(pb.split_key(jax.random.PRNGKey(1), "test"), 256)
  cfg = lista.LISTAConfig(variant="alista", num_layers=4, training="stagewise",
                          learning_rate=3e-3, stage_steps=10, val_every=10, val_size=64,
                          stage_lr_decays=(1.0,), stage_init="fresh")
  fresh = lista.evaluate(pb, lista.train(pb, cfg), test)[-1]
  previous = lista.train(pb, dataclasses.replace(cfg, stage_init="previous"))
  assert lista.evaluate(pb, previous, test)[-1] < fresh - 0.7
  start = lista.init_params(pb, "alista", 2)
  start["theta"] = start["theta"] * jnp.array([1.0, 3.0])
  tuned = lista.train(pb, dataclasses.replace(cfg, num_layers=2, stage_init="previous",
                                              stage_steps=1, learning_rate=0.0),
                      initial_params=start)
  np.testing.assert_array_equal(tuned.params["theta"], start["theta"])
  with pytest.raises(ValueError, match="stage_init"):
    lista.LISTAConfig(stage_init="last")


@pytest.mark.parametrize("variant", ["lista", "lista_cp", "alista"])
def test_identity_layer_passes_its_input_through(problem, test_set, variant):
  params = lista.init_params(problem, variant, 2)
  second = lista.identity_layer(jax.tree_util.tree_map(lambda p: p[1], params), variant)
  params = jax.tree_util.tree_map(lambda p, i: p.at[1].set(i), params, second)
  a = problem.data["A"]
  w = lista.alista_weight(a) if variant == "alista" else None
  xs = lista.apply(params, variant, a, test_set["y"][:16], w,
                   lista.support_counts(2, a.shape[1], 0.05, 0.1))
  np.testing.assert_array_equal(xs[2], xs[1])
  assert float(jnp.abs(xs[1]).sum()) > 0


def test_stage_init_monotone_never_lets_validation_nmse_grow_with_depth():
  """With "monotone" each layer starts from the better of (copy of the layer before,
  identity), and every stage keeps its best validation point, so the validation NMSE
  at the end of each layer is non-increasing in depth, also at a low SNR where, with
  "previous", the third layer already fits noise (-3.59 -> -3.47 dB here)."""
  pb = sparse.lasso(m=32, n=64, p=0.1, snr=5.0)
  cfg = lista.LISTAConfig(variant="alista", num_layers=4, training="stagewise",
                          learning_rate=3e-2, stage_steps=10, val_every=10, val_size=64,
                          stage_lr_decays=(1.0,), ss_p_step=0.05, ss_p_max=0.4,
                          stage_init="previous")
  final = lambda res: [s["val_nmse_db"] for s in res.stages]
  grows = final(lista.train(pb, cfg))
  assert any(b > a + 0.05 for a, b in zip(grows, grows[1:])), grows
  res = lista.train(pb, dataclasses.replace(cfg, stage_init="monotone"))
  assert all(b <= a + 1e-4 for a, b in zip(final(res), final(res)[1:])), final(res)
  assert "identity" in [s["start"] for s in res.stages]


def _docs_recipes():
  """The recipe table of docs/amortized.md: ``{variant: {field: value}}``."""
  path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "amortized.md")
  lines = open(path).read().split("<!-- recipes -->")[1].strip().splitlines()
  fields = [c.strip(" `") for c in lines[0].strip("|").split("|")][1:]
  out = {}
  for line in lines[2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip(" `") for c in line.strip().strip("|").split("|")]
    out[cells[0]] = {f: (c if f in ("training", "init", "stage_init") else
                         ast.literal_eval(c)) for f, c in zip(fields, cells[1:])}
  return out


@pytest.mark.parametrize("variant", lista.VARIANTS)
def test_default_config_is_the_documented_recipe(variant):
  """``LISTAConfig(variant=v)`` trains with the recipe documented in docs/amortized.md,
  and benchmarks/lista_table.py (which produced the documented numbers) uses exactly
  the defaults."""
  from benchmarks import lista_table  # pylint: disable=import-outside-toplevel
  cfg = lista.LISTAConfig(variant=variant).resolved()
  assert {f: getattr(cfg, f) for f in lista.RECIPES[variant]} == lista.RECIPES[variant]
  assert _docs_recipes()[variant] == lista.RECIPES[variant]
  assert lista_table.config_for(variant, 16).resolved() == cfg
  # A variant set after construction (as `metaopt amortized --set method=...` does)
  # takes that variant's recipe, not the first one's.
  other = dataclasses.replace(lista.LISTAConfig(variant="lista"), variant=variant)
  assert other.resolved() == cfg
  # End-to-end training keeps its own learning rate.
  e2e = lista.LISTAConfig(variant=variant, training="end_to_end").resolved()
  assert e2e.learning_rate == lista.DEFAULT_LR[variant]


def test_cli_experiment_trains_the_same_network_as_the_library(problem):
  """`metaopt amortized train --method alista --problem ...` (an ExperimentConfig)
  gives the numbers of ``lista.train`` with the same config."""
  from metaopt.amortized import experiment  # pylint: disable=import-outside-toplevel
  small = dict(num_layers=2, stage_steps=3, val_every=3, val_size=16, batch_size=8)
  exp = experiment.ExperimentConfig(method="alista", problem="lasso_m64_n128_p0.1_snr40",
                                    train=lista.LISTAConfig(**small))
  via_cli = experiment.train(exp)
  direct = lista.train(problem, lista.LISTAConfig(variant="alista", **small))
  for k in direct.params:
    np.testing.assert_array_equal(via_cli.params[k], direct.params[k])


@pytest.mark.parametrize("training", ["stagewise", "end_to_end"])
def test_log_thresholds_move_a_threshold_by_a_fraction_of_itself(problem, training):
  """Adam's first step moves each trained coordinate by exactly ``lr`` (sign of the
  gradient): through ``log theta`` the threshold is multiplied by ``exp(+-lr)``, the
  step ``gamma`` moves by ``lr``."""
  start = lista.init_params(problem, "alista", 1)
  start["theta"] = start["theta"] * 10.0  # Far from its best: the first step is kept.
  lr = 0.1
  cfg = lista.LISTAConfig(variant="alista", num_layers=1, training=training, steps=1,
                          learning_rate=lr, stage_steps=1, val_every=1, val_size=256,
                          stage_lr_decays=(1.0,), log_thresholds=True)
  res = lista.train(problem, cfg, initial_params=start)
  np.testing.assert_allclose(jnp.abs(jnp.log(res.params["theta"] / start["theta"])), lr,
                             rtol=1e-4)
  np.testing.assert_allclose(jnp.abs(res.params["gamma"] - start["gamma"]), lr, rtol=1e-5)


def test_per_instance_starts_as_alista_with_a_per_instance_threshold(problem, test_set):
  """At init (linear map and MLP output zero) a layer is
  ``eta(x - g W'(Ax - y), t ||W'y||_1 / n)`` per instance: checked against numpy,
  layer by layer."""
  k, a = 3, np.asarray(problem.data["A"], np.float64)
  params = lista.init_params(problem, "alista_per_instance", k)
  params["gamma"] = jnp.array([1.0, 0.8, 1.2])
  params["theta"] = jnp.array([0.5, 0.3, 0.2])
  w = lista.alista_weight(problem.data["A"])
  counts = lista.support_counts(k, a.shape[1], 0.05, 0.2)
  y = test_set["y"][:8]
  got = lista.apply(params, "alista_per_instance", problem.data["A"], y, w, counts)
  x = np.zeros((8, a.shape[1]))
  wn = np.asarray(w, np.float64)
  scale = np.abs(np.asarray(y, np.float64) @ wn).sum(-1, keepdims=True) / a.shape[1]
  for layer in range(k):
    g = (x @ a.T - np.asarray(y)) @ wn
    theta = float(params["theta"][layer]) * scale
    v = x - float(params["gamma"][layer]) * g
    x = np.stack([_numpy_support_select(v[i:i + 1], theta[i, 0], counts[layer])[0]
                  for i in range(8)])
    np.testing.assert_allclose(got[layer + 1], x, atol=1e-4, rtol=1e-4)


def test_per_instance_is_scale_equivariant_where_fixed_thresholds_are_not(problem,
                                                                          test_set):
  """Scaling ``y`` by ``c`` scales every per-instance estimate by ``c`` (its thresholds
  follow the instance's scale, its features are scale-free); ALISTA's fixed thresholds
  do not."""
  k, a = 4, problem.data["A"]
  w = lista.alista_weight(a)
  counts = lista.support_counts(k, a.shape[1], 0.012, 0.13)
  params = lista.init_params(problem, "alista_per_instance", k)
  params["mlp_w2"] = jax.random.normal(jax.random.PRNGKey(3), params["mlp_w2"].shape) * 0.3
  params["lin"] = jax.random.normal(jax.random.PRNGKey(4), params["lin"].shape) * 0.1
  y = test_set["y"][:16]
  base = lista.apply(params, "alista_per_instance", a, y, w, counts)
  fixed = lista.init_params(problem, "alista", k)
  for c in (0.01, 100.0):
    np.testing.assert_allclose(lista.apply(params, "alista_per_instance", a, c * y, w,
                                           counts), c * base, rtol=1e-3,
                               atol=1e-5 * c * float(jnp.abs(base).max()))
    scaled = lista.apply(fixed, "alista", a, c * y, w, counts)
    assert not np.allclose(scaled, c * lista.apply(fixed, "alista", a, y, w, counts),
                           rtol=1e-2)


def test_moved_to_uses_the_new_dictionarys_analytic_weight(problem, test_set):
  """``moved_to`` keeps the learned parameters and swaps in the target's analytic weight:
  on the same problem it predicts exactly as before."""
  params = lista.init_params(problem, "alista", 2)
  cfg = lista.LISTAConfig(variant="alista", num_layers=2).resolved()
  res = lista.LISTAResult(params, cfg, np.zeros(0), 0.0, lista.alista_weight(problem.data["A"]))
  y = test_set["y"][:8]
  np.testing.assert_array_equal(res.moved_to(problem).predict(problem, y),
                                res.predict(problem, y))
  other = sparse.lasso(m=64, n=128, p=0.1, snr=40.0, lam=0.1, dict_seed=1)
  moved = res.moved_to(other)
  np.testing.assert_array_equal(moved.w_alista, lista.alista_weight(other.data["A"]))
  assert moved.params is res.params
