"""The leaderboard protocol end to end on a tiny suite: runs stored, resumed without
training, errors kept and retried on request, runs equal to metaopt.train.train, entrant
names that collide refused, CLI (one-line errors, Ctrl-C, a closed pipe) and HTML page."""

import dataclasses
import glob
import os
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import optimizers
from metaopt.cli import main as cli_main
from metaopt.eval import entrants, protocol, report, suites
from metaopt.eval.store import ResultsDB
from metaopt.lopt.base import LearnedOptimizer
from metaopt.train import train
from tests.eval import browser, tiny


@dataclasses.dataclass(frozen=True)
class _ScaledSGDConfig:
  init_log_lr: float = -2.0


class _ScaledSGD(LearnedOptimizer):
  """A one-parameter 'learned' optimizer: SGD with lr = exp(theta['log_lr'])."""
  arch = "test_eval_scaled_sgd"
  Config = _ScaledSGDConfig

  def init_meta_params(self, key):
    return {"log_lr": jnp.asarray(self.config.init_log_lr, jnp.float32)}

  def transform(self, theta, *, num_steps=None, param_info=None):
    if param_info is None:
      raise ValueError("expected the task's param_info")
    return optax.with_extra_args_support(optax.scale(-jnp.exp(theta["log_lr"])))


class _Broken(_ScaledSGD):
  def transform(self, theta, *, num_steps=None, param_info=None):
    raise RuntimeError("this optimizer is broken on purpose")


def _learned():
  lo = _ScaledSGD()
  return entrants.learned("scaled-sgd", lo, lo.init_meta_params(None),
                          {"trained_on": ["test_eval_linreg_family"],
                           "meta_training_device_hours": 0.25})


def _broken():
  lo = _Broken()
  return entrants.learned("broken", lo, lo.init_meta_params(None), {})


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
  tiny.register()
  d = tmp_path_factory.mktemp("lb")
  path = d / "tiny.json"
  import json  # pylint: disable=import-outside-toplevel
  path.write_text(json.dumps(tiny.suite_content()))
  suite = suites.load(str(path))
  db_path = str(d / "results.db")
  opts = ["sgd", _learned(), _broken()]  # adam (the reference) is added automatically.
  stats = protocol.run_leaderboard(suite, opts, db_path=db_path, progress=False,
                                   log=lambda m: None)
  yield {"suite": suite, "db": db_path, "stats": stats, "opts": opts, "dir": d,
         "suite_path": str(path)}
  tiny.unregister()


def _runs(lb, **kw):
  with ResultsDB(lb["db"]) as db:
    return db.runs(lb["suite"].setup_hash, "trial", **kw)


def test_all_runs_stored(lb):
  runs = _runs(lb)
  # adam and sgd: 3 studies x 2 trials at 4/3 x 30 steps; the two learned ones: one
  # run per study at the self-tuning budget (3 x 30 steps, the default factor).
  assert len(runs) == 18
  assert lb["stats"]["trained"] == 18 and lb["stats"]["skipped"] == 0
  for r in runs:
    assert r["suite"] == "tiny" and r["suite_version"] == 1
    assert r["suite_hash"] == lb["suite"].setup_hash
    assert r["package_version"] and r["jax_version"]
  errors = [r for r in runs if r["status"] == "error"]
  assert len(errors) == 3 and {r["optimizer"] for r in errors} == {"broken"}
  for r in runs:
    if r["status"] == "error":
      continue
    steps = 40 if r["ruleset"] == "tuned" else 90
    assert r["train_loss"].shape == (steps,) and list(r["eval_steps"]) == list(
        range(10, steps + 1, 10))
  assert sorted({r["seed"] for r in runs if r["optimizer"] == "sgd"}) == [0, 1, 100, 101,
                                                                            200, 201]


def test_second_invocation_trains_nothing(lb):
  stats = protocol.run_leaderboard(lb["suite"], lb["opts"], db_path=lb["db"],
                                   progress=False, log=lambda m: None)
  assert stats["trained"] == 0 and stats["compiled"] == 0
  assert stats["skipped"] == 18 and len(_runs(lb)) == 18


def test_interrupted_run_resumes_only_the_missing_runs(lb):
  """Deleting stored runs (as if the job died before them) re-trains just those, and
  the re-trained curves are identical (same config and seed, same numbers)."""
  before = {r["seed"]: r["train_loss"] for r in _runs(lb, optimizer="sgd")}
  with ResultsDB(lb["db"]) as db:
    db.conn.execute("DELETE FROM runs WHERE optimizer='sgd' AND seed>=100")
    db.conn.commit()
  stats = protocol.run_leaderboard(lb["suite"], lb["opts"], db_path=lb["db"],
                                   progress=False, log=lambda m: None)
  assert stats["trained"] == 4 and stats["skipped"] == 14
  after = {r["seed"]: r["train_loss"] for r in _runs(lb, optimizer="sgd")}
  assert sorted(after) == sorted(before)
  for seed in before:
    np.testing.assert_array_equal(after[seed], before[seed])


def test_crashed_runs_are_stored_and_retried_only_on_request(lb):
  broken = _runs(lb, optimizer="broken")
  assert len(broken) == 3
  assert all(r["status"] == "error" and "broken on purpose" in r["error"] for r in broken)
  stats = protocol.run_leaderboard(lb["suite"], [_broken()], db_path=lb["db"],
                                   progress=False, retry_errors=True, log=lambda m: None)
  assert stats["trained"] == 3 and stats["errors"] == 3  # adam is stored; broken re-ran.


def test_scores_from_real_runs(lb):
  with ResultsDB(lb["db"]) as db:
    board = report.compute(db, lb["suite"])
  e = {x["name"]: x for x in board["entrants"]}
  assert set(e) == {"adam", "sgd", "scaled-sgd", "broken"}
  assert e["broken"]["per_task"][tiny.LINREG]["steps_to_target"] == float("inf")
  assert e["broken"]["per_task"][tiny.LINREG]["errors"] == 3
  # Meta-trained on the task's family: ineligible, listed last, unscored.
  assert e["scaled-sgd"]["ineligible"] == {tiny.LINREG: ["family test_eval_linreg_family"]}
  assert e["scaled-sgd"]["score_time"] is None
  assert board["entrants"][-1]["name"] == "scaled-sgd"
  assert e["scaled-sgd"]["meta_cost_hours"] == 0.25
  # Every eligible entrant is scored on the one task.
  for name in ("adam", "sgd", "broken"):
    assert e[name]["score_steps"] is not None


def test_stored_runs_match_train(lb):
  """The runner's curves equal metaopt.train.train's for the same config and seed."""
  run = _runs(lb, optimizer="adam", seed=101)[0]
  cfg = dict(run["config"])
  ref = train(tiny.linreg_task(), _adam_with_schedule(cfg, 40), 40, seed=101, eval_every=10,
              eval_batches=2)
  assert run["status"] == "ok"
  # float32: the traced hyper-parameters reorder a few roundings.
  np.testing.assert_allclose(run["train_loss"], ref.train_loss, rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(run["valid_loss"], ref.valid_loss, rtol=2e-4, atol=1e-7)
  np.testing.assert_array_equal(run["eval_steps"], ref.eval_steps)


def _adam_with_schedule(cfg, steps):
  """Adam with a stored trial's config, its schedule family spanning ``steps``."""
  lr = optimizers.warmup_decay_schedule(cfg["learning_rate"], steps, cfg["warmup_fraction"],
                                        cfg["lr_decay"])
  return optax.adam(lr, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"])


def test_bad_optimizer_and_colliding_names(tmp_path):
  with pytest.raises(ValueError,
                     match="Did you mean adam.*Known: .*adam, adamw.*Not a learned optimizer"):
    entrants.parse("adamm")
  import jax  # pylint: disable=import-outside-toplevel
  from metaopt.lopt import build, io  # pylint: disable=import-outside-toplevel
  lo = build("mlp")
  for sub in ("a", "b"):
    (tmp_path / sub).mkdir()
    io.save(str(tmp_path / sub / "opt.safetensors"), lo,
            lo.init_meta_params(jax.random.PRNGKey(0)), {})
  suite = suites.from_dict(tiny.suite_content())
  with pytest.raises(ValueError, match="two entrants are both called 'opt'.*rename"):
    protocol.resolve_entrants([str(tmp_path / "a" / "opt.safetensors"),
                               str(tmp_path / "b" / "opt.safetensors")], suite)


def test_cli_run_show_report(lb, capsys):
  args = ["--suite", lb["suite_path"], "--db", lb["db"]]
  assert cli_main(["leaderboard", "run", *args, "--optimizers", "sgd", "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert "0 runs trained" in out and "sgd" in out
  assert cli_main(["leaderboard", "show", *args]) == 0
  assert "scaled-sgd" in capsys.readouterr().out
  out_dir = str(lb["dir"] / "report")
  assert cli_main(["leaderboard", "report", *args, "--out", out_dir]) == 0
  assert os.path.exists(os.path.join(out_dir, "index.html"))
  assert cli_main(["leaderboard", "show", "--suite", "nope", "--db", lb["db"]]) == 2
  assert "Unknown suite 'nope'" in capsys.readouterr().err
  # An --out that is a file: one line, exit 2.
  not_a_dir = lb["dir"] / "a_file"
  not_a_dir.write_text("x")
  assert cli_main(["leaderboard", "report", *args, "--out", str(not_a_dir)]) == 2
  err = capsys.readouterr().err
  assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
  # --tasks with a name the suite lacks lists its tasks.
  assert cli_main(["leaderboard", "run", *args, "--optimizers", "sgd", "--tasks", "nope",
                   "--no-progress"]) == 2
  assert tiny.LINREG in capsys.readouterr().err


def test_cli_ctrl_c_and_closed_pipe(lb, capsys, monkeypatch):
  def interrupted(*a, **k):
    raise KeyboardInterrupt
  monkeypatch.setattr(protocol, "run_leaderboard", interrupted)
  args = ["--suite", lb["suite_path"], "--db", lb["db"]]
  assert cli_main(["leaderboard", "run", *args, "--no-progress"]) == 130
  err = capsys.readouterr().err
  assert "interrupted" in err and "Traceback" not in err

  def closed_pipe(*a, **k):
    raise BrokenPipeError
  monkeypatch.setattr(report, "format_table", closed_pipe)
  import metaopt.eval as eval_pkg  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(eval_pkg, "format_table", closed_pipe)
  assert cli_main(["leaderboard", "show", *args]) == 0


@pytest.mark.skipif(browser.chromium() is None,
                    reason="headless Chromium is not installed (scripts/setup.sh installs "
                           "Debian's chromium package when run as root)")
def test_html_page_renders_in_headless_chromium(lb, tmp_path):
  index = report.write_report(lb["db"], lb["suite"], str(tmp_path / "html"))
  dom = browser.dump_dom(index, tmp_path / "profile")
  # The page's JS ran: it counted rows and loaded images, and sorted by B (time).
  body = re.search(r"<body[^>]*>", dom).group(0)
  assert 'data-rows="4"' in body
  assert 'data-images-loaded="3/3"' in body  # 1 task curve + 2 profiles.
  widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
  assert len(widths) == 3 and min(widths) > 100
  assert 'data-sorted-by="B (time)"' in dom
  rows = re.findall(r'<tr data-optimizer="([^"]+)"', dom)
  assert sorted(rows) == ["adam", "broken", "scaled-sgd", "sgd"]


def test_learned_optimizer_from_file(tmp_path):
  """A .safetensors file becomes a self-tuning entrant with its metadata."""
  import jax  # pylint: disable=import-outside-toplevel
  from metaopt.lopt import build, io  # pylint: disable=import-outside-toplevel
  lo = build("mlp")
  path = str(tmp_path / "my-lopt.safetensors")
  io.save(path, lo, lo.init_meta_params(jax.random.PRNGKey(0)),
          {"trained_on": ["mlp_digits_family"], "meta_training_device_hours": 1.5})
  e = entrants.parse(path)
  assert (e.name, e.kind, e.ruleset) == ("my-lopt", "learned", "self_tuning")
  assert e.trained_on == ("mlp_digits_family",) and e.meta_cost_hours == 1.5
  assert e.fixed_config(300)["num_steps"] == 300 and len(e.fingerprint) == 16
  assert entrants.leakage(e, "mlp_digits_w128_d2", ()) == ["family mlp_digits_family"]
  assert entrants.leakage(e, "mlp_mnist1d_w128_d2", ()) == []
  with pytest.raises(FileNotFoundError):
    entrants.parse(str(tmp_path / "missing.safetensors"))


def test_cli_run_logs_to_wandb_when_asked(lb, capsys, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  args = ["--suite", lb["suite_path"], "--db", lb["db"]]
  assert cli_main(["leaderboard", "run", *args, "--optimizers", "sgd", "--no-progress",
                   "--wandb", "offline"]) == 0
  where = os.path.splitext(lb["db"])[0] + "_wandb"
  assert "logged the leaderboard to wandb" in capsys.readouterr().out
  assert len(glob.glob(os.path.join(where, "wandb", "offline-run-*", "run-*.wandb"))) == 1
