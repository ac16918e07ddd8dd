"""Meta-training on a mixture of task families (``family="a,b"``)."""

import dataclasses

import jax
import numpy as np
import pytest

from metaopt.lopt import io
from metaopt.meta import config as config_lib
from metaopt.meta import estimators as E
from metaopt.meta import trainer as trainer_lib
from metaopt.meta.truncation import TruncationSchedule
from metaopt.meta.unroll import InnerProblem
from tasks import registry
from tests.meta import _meta_script as script
from tests.meta.helpers import LrMomentum, quadratic_family

pytestmark = pytest.mark.usefixtures("test_names")


@pytest.fixture
def second_family():
  registry.FAMILIES.register("test_quadratic_fixed", lambda: quadratic_family(
      fixed=True, name="test_quadratic_fixed"))
  yield "test_quadratic_fixed"
  registry.FAMILIES.unregister("test_quadratic_fixed")


def test_split_data_mixture_is_the_mean_of_member_estimates():
  """Each member sees its own data (element i of the data tuple) and the gradient is
  the plain mean of the members' estimates."""
  lopt = LrMomentum()
  theta = lopt.init_meta_params(None)
  sched = TruncationSchedule("constant", 5, 20, random_offsets=False)
  a = E.PES(InnerProblem(quadratic_family(fixed=False), None, lopt, sched), 4, 0.01)
  b = E.TruncatedBackprop(InnerProblem(quadratic_family(fixed=True), None, lopt, sched), 4)
  mix = E.MixedEstimator([a, b], [1.0, 1.0], split_data=True, labels=["fa", "fb"])
  key = jax.random.PRNGKey(0)
  ws = mix.init_worker_state(theta, key)
  g, _, m = jax.jit(mix.compute_gradient)(theta, ws, ({}, {}), key)
  ka, kb = jax.random.split(key)
  ga, _, ma = jax.jit(a.compute_gradient)(theta, ws[0], {}, ka)
  gb, _, mb = jax.jit(b.compute_gradient)(theta, ws[1], {}, kb)
  for name in theta:
    np.testing.assert_allclose(g[name], 0.5 * (ga[name] + gb[name]), rtol=1e-5)
  np.testing.assert_allclose(m["fa/meta_loss"], ma["meta_loss"], rtol=1e-6)
  np.testing.assert_allclose(m["fb/meta_loss"], mb["meta_loss"], rtol=1e-6)
  np.testing.assert_allclose(m["valid_fraction"], 1.0)


def test_meta_train_on_a_mixture_logs_each_member_and_exports_all(tmp_path, second_family):
  cfg = script.config(str(tmp_path), num_steps=6, family=f"test_quadratic,{second_family}",
                      **{"eval.every": 3, "eval.keep_best": True})
  assert cfg.families == ("test_quadratic", second_family)
  result = trainer_lib.MetaTrainer(cfg, lopt=LrMomentum()).run(progress=False)
  last = result.rows[-1]
  np.testing.assert_allclose(
      last["meta_loss"],
      0.5 * (last["test_quadratic/meta_loss"] + last[f"{second_family}/meta_loss"]), rtol=1e-5)
  evals = [r for r in result.rows if "eval/lopt_final_loss" in r]
  assert evals and f"eval/{second_family}/adam_final_loss" in evals[-1]
  _, _, meta = io.load_meta_params(result.export_path)
  assert meta["trained_on"] == ["test_quadratic", second_family]
  # Each member reports its validation loss against Adam tuned over the grid.
  for fam in ("test_quadratic", second_family):
    assert evals[-1][f"eval/{fam}/adam_lr"] in trainer_lib.MetaTrainer(cfg, lopt=LrMomentum()
                                                                       ).adam_grid()
    assert np.isfinite(evals[-1][f"eval/{fam}/lopt_valid_loss"])
  # keep_best: the exported best is the evaluation with the lowest validation loss
  # relative to tuned Adam's (not the lowest training loss).
  best_step = min(evals, key=lambda r: r["eval/lopt_valid_ratio"])["step"]
  _, best_theta, best_meta = io.load_meta_params(str(tmp_path / "tiny.best.safetensors"))
  assert best_meta["selected_at_step"] == best_step
  if best_step == 6:
    np.testing.assert_allclose(best_theta["log_lr"], result.theta["log_lr"])


def test_unknown_member_of_a_mixture_is_named():
  with pytest.raises(ValueError, match="no_such_family"):
    config_lib.from_dict({"family": "quadratic_family,no_such_family"})
  with pytest.raises(ValueError, match="twice"):
    config_lib.from_dict({"family": "quadratic_family,quadratic_family"})


def test_keep_best_is_bookkeeping_not_part_of_the_fingerprint():
  """Turning keep_best on (or upgrading to a version that has it) must not stop a
  run from resuming its checkpoints."""
  cfg = config_lib.from_dict({"family": "quadratic_family"})
  best = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, keep_best=True))
  assert best.fingerprint() == cfg.fingerprint()
  other = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, horizon=77))
  assert other.fingerprint() != cfg.fingerprint()
