"""Outer loop: determinism, exact resume after SIGKILL, 1 vs 8 devices, NaN safety,
export."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import checkpoint
from metaopt.checkpoint import CheckpointError
from metaopt.lopt import io
from metaopt.runlog import read_metrics
from metaopt.meta import trainer as trainer_lib
from tests.meta import _meta_script as script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.usefixtures("test_names")


def run_script(run_dir, *args, check=True):
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests.meta._meta_script", str(run_dir), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  if check and proc.returncode != 0:
    raise AssertionError(proc.stderr[-3000:])
  return proc


def last_json(proc):
  return json.loads(proc.stdout.strip().splitlines()[-1])


def strip_timing(rows):
  return [{k: v for k, v in r.items() if k not in trainer_lib.TIMING_KEYS} for r in rows]


def in_process(run_dir, **overrides):
  cfg = script.config(str(run_dir), **overrides)
  return trainer_lib.MetaTrainer(cfg, **script.objects()).run(progress=False)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, test_names):
  """The reference: 12 uninterrupted outer steps on this process's one device."""
  return in_process(tmp_path_factory.mktemp("full"))


def test_sigkill_resume_matches_uninterrupted(tmp_path, full_run):
  # Killed after 10 outer steps: checkpoint at 8, rows up to 10 logged.
  proc = run_script(tmp_path / "killed", "--kill_after", "10", check=False)
  assert proc.returncode == -9, proc.stderr[-2000:]
  rows = read_metrics(str(tmp_path / "killed"))
  assert max(r["step"] for r in rows) == 10
  resumed = in_process(tmp_path / "killed")
  assert resumed.step == 12 and not resumed.interrupted
  for name in full_run.theta:
    assert full_run.theta[name] == resumed.theta[name]  # bitwise: same programs and inputs
  assert strip_timing(full_run.rows) == strip_timing(resumed.rows)
  assert any("eval/lopt_final_loss" in r for r in resumed.rows)
  # Outputs: curves and the exported optimizer file.
  assert os.path.exists(tmp_path / "killed" / "meta_loss.png")
  assert os.path.exists(resumed.export_path)


def test_eight_devices_match_one(tmp_path, full_run):
  """SGD outer optimizer without clipping: a gradient off by the device count (a
  psum too many or too few) changes theta by a large factor."""
  assert jax.device_count() == 1
  out = last_json(run_script(tmp_path / "eight", "--devices", "8"))
  assert out["devices"] == 8
  start = script.objects()["lopt"].init_meta_params(None)
  for name, value in out["theta"].items():
    moved = abs(float(full_run.theta[name]) - float(start[name]))
    assert moved > 1e-2  # theta really moved, so a scale error would show
    np.testing.assert_allclose(value, full_run.theta[name], rtol=1e-5, atol=1e-4 * moved)


def test_mismatched_config_refused(full_run):
  run_dir = os.path.dirname(full_run.export_path)
  with pytest.raises(CheckpointError, match=r"estimator.sigma: 0.05 -> 0.1\).*"
                     r"run.accept_changes=true"):
    in_process(run_dir, num_steps=16, **{"estimator.sigma": 0.1})


def test_sigterm_checkpoints_and_stops(tmp_path, full_run):
  cfg = script.config(str(tmp_path / "term"))
  trainer = trainer_lib.MetaTrainer(cfg, **script.objects())
  compile_step, calls = trainer.compile_step, [0]

  def compile_then_terminate(state):
    step = compile_step(state)

    def step_then_terminate(state, data):
      calls[0] += 1
      if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGTERM)  # handled after this step completes
      return step(state, data)

    return step_then_terminate

  trainer.compile_step = compile_then_terminate
  result = trainer.run(progress=False)
  assert result.interrupted and result.step == 3 and result.export_path is None
  assert checkpoint.latest_step(trainer.checkpoint_dir) == 3
  first_compile = checkpoint.read_metadata(trainer.checkpoint_dir)["metadata"]["compile_time_s"]
  resumed = in_process(tmp_path / "term")
  assert strip_timing(resumed.rows) == strip_timing(full_run.rows)
  # Device time counts the first session's compilation once, not again on resume.
  final = checkpoint.read_metadata(trainer.checkpoint_dir)["metadata"]
  assert final["compile_time_s"] == first_compile > 0


def test_run_where_every_inner_run_diverges_stops_with_an_error(tmp_path):
  """No valid task: NaN meta-loss, every update skipped, the run stops with an error
  after ``run.max_skipped_steps`` and exports nothing (not a silent success)."""
  family = script.objects()["family"]
  make_task = family.make_task

  def nan_task(static, dynamic):  # The quadratic, with a loss that is always NaN.
    task = make_task(static, dynamic)
    return dataclasses.replace(task, loss=lambda p, b, k: task.loss(p, b, k) * jnp.nan)

  cfg = script.config(str(tmp_path / "div"), num_steps=50,
                      **{"eval.every": 0, "run.max_skipped_steps": 4})
  trainer = trainer_lib.MetaTrainer(cfg, family=dataclasses.replace(family, make_task=nan_task),
                                    lopt=script.objects()["lopt"])
  with pytest.raises(trainer_lib.MetaTrainingDiverged, match="last 4 outer updates"):
    trainer.run(progress=False)
  rows = read_metrics(os.path.join(cfg.run.run_dir, "metrics.jsonl"))
  assert rows and all(np.isnan(r["meta_loss"]) and r["valid_fraction"] == 0.0 for r in rows)
  assert rows[-1]["num_skipped_total"] == rows[-1]["step"]
  assert not [f for f in os.listdir(cfg.run.run_dir) if f.endswith(".safetensors")]


def test_non_finite_meta_gradient_is_skipped(tmp_path):
  """The outer NaN guard: a non-finite estimate leaves theta and the optimizer state
  unchanged and is counted."""
  cfg = script.config(str(tmp_path / "nan"), num_steps=2, **{"eval.every": 0, "run.log_every": 1})
  trainer = trainer_lib.MetaTrainer(cfg, **script.objects())
  estimate = trainer.estimator.compute_gradient

  def nan_gradient(theta, worker_state, data, key):
    grad, worker_state, metrics = estimate(theta, worker_state, data, key)
    return jax.tree_util.tree_map(lambda g: g * np.nan, grad), worker_state, metrics

  trainer.estimator.compute_gradient = nan_gradient  # before the outer step is traced
  result = trainer.run(progress=False)
  start = script.objects()["lopt"].init_meta_params(None)
  for name in start:
    assert float(result.theta[name]) == float(start[name])
  assert [r["skipped"] for r in result.rows] == [1.0, 1.0]
  assert result.rows[-1]["num_skipped_total"] == 2.0


def test_num_tasks_must_divide_devices():
  with pytest.raises(ValueError, match="multiple of 8"):
    trainer_lib.check_task_split(12, 8)
  trainer_lib.check_task_split(16, 8)


@pytest.mark.slow
def test_grad_accum_and_resampling(tmp_path):
  """Two estimates per update (twice the inner steps) and all tasks restarted every
  2 outer steps; theta stays finite and moves."""
  res = in_process(tmp_path / "acc", num_steps=4, **{
      "eval.every": 0, "run.log_every": 1, "outer.grad_accum": 2, "outer.resample_every": 2})
  assert [r["inner_steps"] for r in res.rows] == [2 * 8 * 2 * 4] * 4
  start = script.objects()["lopt"].init_meta_params(None)
  assert all(np.isfinite(v) and v != float(start[k]) for k, v in res.theta.items())


def test_family_object_meta_trains_under_the_name_given(tmp_path):
  """A user's own family (not registered) is meta-trained; checkpoints, metrics and the
  export record the name given (``family_name``, default the object's ``name``)."""
  from tests.meta.helpers import LrMomentum, quadratic_family  # pylint: disable=import-outside-toplevel
  fam = quadratic_family(fixed=False, name="my_quadratic")
  cfg = script.config(str(tmp_path), 4, family=fam, **{"eval.every": 0})
  assert cfg.families == ("my_quadratic",) and cfg.to_dict()["family"] == "my_quadratic"
  result = trainer_lib.MetaTrainer(cfg, lopt=LrMomentum()).run(progress=False)
  _, _, meta = io.load_meta_params(result.export_path)
  assert meta["trained_on"] == ["my_quadratic"] and meta["config"]["family"] == "my_quadratic"
  named = script.config(str(tmp_path / "named"), 4, family=fam, family_name="mine")
  assert named.families == ("mine",)
  with pytest.raises(ValueError, match="family_name='mine' names a family object"):
    script.config(str(tmp_path), 4, family_name="mine")


def test_small_leaf_partition_equals_scaling_the_updates_by_hand():
  """``optax.partition`` of the small θ leaves gives the numbers of the hand-written
  scaling it replaced up to float32 rounding (XLA fuses the partitioned update
  differently: a few entries differ in the last bit). A multiplier of 1 (every shipped
  config) takes neither path."""
  import optax  # pylint: disable=import-outside-toplevel
  from metaopt.meta import config as config_lib  # pylint: disable=import-outside-toplevel
  cfg = config_lib.from_dict({"outer.small_leaf_lr_multiplier": 10.0, "outer.lr": 0.01,
                              "outer.grad_clip": "value"})
  mult, small = 10.0, config_lib.SMALL_LEAF_SIZE
  by_hand = optax.chain(optax.clip(cfg.outer.clip_value), optax.adam(0.01), optax.stateless(
      lambda u, _: jax.tree_util.tree_map(lambda x: x * mult if x.size <= small else x, u)))
  theta = {"log_lr": jnp.float32(-6.9), "scales": jnp.zeros(3), "w": jnp.ones((8, 8))}
  results = []
  for opt in (trainer_lib.make_outer_optimizer(cfg), by_hand):
    t, state = theta, opt.init(theta)

    @jax.jit
    def step(t, state, key, opt=opt):
      g = jax.tree_util.tree_map(lambda x: jax.random.normal(key, x.shape), t)
      u, state = opt.update(g, state, t)
      return optax.apply_updates(t, u), state

    for s in range(10):
      t, state = step(t, state, jax.random.PRNGKey(s))
    results.append(t)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-7, atol=0),
                         *results)
  default = trainer_lib.make_outer_optimizer(config_lib.MetaTrainConfig()).init(theta)
  plain = optax.chain(optax.clip(3.0), optax.adam(1e-3)).init(theta)
  # No partition at multiplier 1: the same state as before.
  assert jax.tree_util.tree_structure(default) == jax.tree_util.tree_structure(plain)
