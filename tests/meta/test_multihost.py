"""Two processes joined by ``jax.distributed.initialize()`` on localhost (CPU
collectives), each with 2 devices: theta equals the single-device run's."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.meta import _meta_script as script
from tests.meta.test_trainer import ROOT, in_process


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.usefixtures("test_names")
def test_two_processes_match_one_device(tmp_path):
  port = free_port()
  env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.meta._meta_script", str(tmp_path / "multi"), "--devices", "2",
       "--num_processes", "2", "--process_id", str(i), "--port", str(port)],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  multi = json.loads(outs[0][0].strip().splitlines()[-1])
  assert multi["devices"] == 4
  one = in_process(tmp_path / "one")
  start = script.objects()["lopt"].init_meta_params(None)
  for name, value in multi["theta"].items():
    moved = abs(float(one.theta[name]) - float(start[name]))
    np.testing.assert_allclose(value, one.theta[name], rtol=1e-5, atol=1e-4 * moved)
  assert os.path.exists(tmp_path / "multi" / "tiny.safetensors")
