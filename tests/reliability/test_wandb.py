"""wandb: an online start that cannot reach the server is bounded and falls back to
offline with one warning; a resumed run continues the same wandb run (its id is kept
in the run directory); the PNG curves are uploaded (docs/reliability.md). A fake
``wandb`` module records the calls (no network, no wandb files)."""

import sys
import types
import warnings

import pytest

from metaopt import runlog
from metaopt.meta import trainer as trainer_lib
from tests.meta import _meta_script as script
from tests.meta.helpers import registered_test_names


class CommError(Exception):
  pass


@pytest.fixture
def fake_wandb(monkeypatch):
  fake = types.ModuleType("wandb")
  fake.inits, fake.runs, fake.offline_only = [], [], False

  class Run:
    def __init__(self, kwargs):
      self.kwargs, self.logged = kwargs, []

    def log(self, values, step=None):
      self.logged.append((step, values))

    def finish(self):
      pass

  def init(**kwargs):
    fake.inits.append(kwargs)
    if kwargs["mode"] == "online" and fake.offline_only:
      raise CommError("timed out after 20 s")
    fake.runs.append(Run(kwargs))
    return fake.runs[-1]

  fake.init = init
  fake.teardown = lambda: None
  fake.Settings = lambda **kwargs: kwargs
  fake.Image = lambda path: ("image", path)
  monkeypatch.setitem(sys.modules, "wandb", fake)
  monkeypatch.delenv("WANDB_MODE", raising=False)
  return fake


def test_online_without_network_falls_back_to_offline(tmp_path, fake_wandb):
  fake_wandb.offline_only = True
  with pytest.warns(UserWarning) as record:
    logger = runlog.MetricsLogger(str(tmp_path), mode="online")
  messages = [str(w.message) for w in record]
  assert len(messages) == 1 and "could not start online (timed out" in messages[0]
  assert "at most 20 s" in messages[0]
  assert "offline" in messages[0] and "wandb sync" in messages[0]
  assert [i["mode"] for i in fake_wandb.inits] == ["online", "offline"]
  assert fake_wandb.inits[0]["settings"]["init_timeout"] == runlog.WANDB_INIT_TIMEOUT_S
  logger.log(1, {"x": 1.0})
  logger.close()
  assert fake_wandb.runs[0].logged == [(1, {"x": 1.0})]


def test_resume_continues_the_same_wandb_run(tmp_path, fake_wandb):
  runlog.MetricsLogger(str(tmp_path), mode="offline").close()
  runlog.MetricsLogger(str(tmp_path), mode="offline", resume=True).close()
  runlog.MetricsLogger(str(tmp_path), mode="offline").close()  # A fresh run: a new id.
  ids = [i["id"] for i in fake_wandb.inits]
  assert ids[0] == ids[1] != ids[2]
  assert all(i["resume"] == "allow" for i in fake_wandb.inits)


def test_meta_training_uploads_curves_and_resumes_its_wandb_run(tmp_path, fake_wandb):
  with registered_test_names(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    cfg = script.config(str(tmp_path), 4, **{"run.wandb_mode": "offline"})
    trainer_lib.MetaTrainer(cfg, **script.objects()).run(progress=False)
    longer = script.config(str(tmp_path), 8, **{"run.wandb_mode": "offline"})
    trainer_lib.MetaTrainer(longer, **script.objects()).run(progress=False)
  first, resumed = fake_wandb.runs
  assert first.kwargs["id"] == resumed.kwargs["id"]
  images = {k: v for _, values in first.logged for k, v in values.items()
            if isinstance(v, tuple) and v[0] == "image"}
  assert set(images) == {"meta_loss_curve", "eval_loss_curve"}
  assert images["meta_loss_curve"][1].endswith("meta_loss.png")
  assert max(step for step, _ in resumed.logged) == 8
