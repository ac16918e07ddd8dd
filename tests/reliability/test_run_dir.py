"""The run directory: deleted mid-run, its metrics are written again in full; a run
directory that is a file, or a task without parameters, is one clear error
(docs/reliability.md)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from metaopt import runlog
from metaopt.meta import trainer as trainer_lib
from tests.meta import _meta_script as script
from tests.meta.helpers import registered_test_names

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rows(rows):
  return [{k: v for k, v in r.items() if k not in trainer_lib.TIMING_KEYS} for r in rows]


def test_logger_rewrites_a_deleted_metrics_file(tmp_path):
  run_dir = tmp_path / "run"
  with runlog.MetricsLogger(str(run_dir), {"a": 1}, mode="disabled") as logger:
    logger.log(1, {"x": 1.0})
    shutil.rmtree(run_dir)
    with pytest.warns(UserWarning, match="deleted or replaced.*with the 1 rows"):
      logger.log(2, {"x": 2.0})
    logger.log(3, {"x": 3.0})
  assert [r["step"] for r in runlog.read_metrics(str(run_dir))] == [1, 2, 3]
  assert json.load(open(run_dir / "config.json")) == {"a": 1}
  # A resumed logger keeps the rows of the earlier sessions too.
  with runlog.MetricsLogger(str(run_dir), mode="disabled", resume=True) as logger:
    os.remove(run_dir / "metrics.jsonl")
    with pytest.warns(UserWarning, match="with the 3 rows"):
      logger.log(4, {"x": 4.0})
  assert [r["step"] for r in runlog.read_metrics(str(run_dir))] == [1, 2, 3, 4]


def test_run_dir_deleted_mid_meta_training_keeps_every_metrics_row(tmp_path):
  with registered_test_names():
    reference = trainer_lib.MetaTrainer(script.config(str(tmp_path / "ref")),
                                        **script.objects()).run(progress=False)
    run_dir = tmp_path / "deleted"
    trainer = trainer_lib.MetaTrainer(script.config(str(run_dir)), **script.objects())
    compile_step, calls = trainer.compile_step, [0]

    def compile_then_delete(state):
      step = compile_step(state)

      def step_then_delete(state, data):
        calls[0] += 1
        if calls[0] == 6:  # After the checkpoint of step 4 and the rows of steps 2, 4.
          shutil.rmtree(run_dir)
        return step(state, data)

      return step_then_delete

    trainer.compile_step = compile_then_delete
    with pytest.warns(UserWarning, match="deleted or replaced"):
      result = trainer.run(progress=False)
  assert _rows(result.rows) == _rows(reference.rows)
  assert result.theta == reference.theta


def test_train_out_existing_file_is_one_line(tmp_path):
  out = tmp_path / "taken"
  out.write_text("not a directory")
  proc = subprocess.run(
      [sys.executable, "-m", "metaopt.cli", "train", "--task", "quadratic_d10_cond10",
       "--steps", "5", "--out", str(out), "--no-progress"], cwd=_REPO, capture_output=True,
      text=True, timeout=300, env=dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "is an existing file, not a directory" in lines[0], proc.stderr
  assert out.read_text() == "not a directory"


def test_task_without_parameters_is_refused():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from metaopt import train  # pylint: disable=import-outside-toplevel
  from tasks.base import Task  # pylint: disable=import-outside-toplevel
  task = Task(name="empty", init=lambda key: {}, loss=lambda p, b, k: jnp.zeros(()),
              batch=lambda data, key, split: None, data=None, abstract_batch=None,
              normalize_loss=lambda loss: loss)
  with pytest.raises(ValueError, match="'empty': init returned parameters without any array"):
    train.train(task, optax.adam(1e-3), 5)
