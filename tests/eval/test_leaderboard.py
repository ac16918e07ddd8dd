"""End to end on a tiny suite: runs stored, resumed without training, errors and NaN
runs kept, tuning recorded, runner equal to metaopt.train.train, CLI and HTML page."""

import dataclasses
import os
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import optimizers
from metaopt.cli import main as cli_main
from metaopt.eval import entrants, leaderboard, report, suites
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
  stats = leaderboard.run_leaderboard(suite, opts, db_path=db_path, progress=False,
                                      log=lambda m: None)
  yield {"suite": suite, "db": db_path, "stats": stats, "opts": opts, "dir": d,
         "suite_path": str(path)}
  tiny.unregister()


def test_all_runs_stored(lb):
  suite = lb["suite"]
  with ResultsDB(lb["db"]) as db:
    evals = db.runs(suite.hash, "eval")
    tunes = db.runs(suite.hash, "tune")
  # 4 entrants (adam, sgd, scaled-sgd, broken) x 3 seeds; 2 tuned x 3 lr points.
  assert len(evals) == 12 and len(tunes) == 6
  assert lb["stats"]["trained"] == 18 and lb["stats"]["skipped"] == 0
  for r in evals + tunes:
    assert r["suite"] == "tiny" and r["suite_version"] == 1 and r["suite_hash"] == suite.hash
    assert r["package_version"] and r["jax_version"]
  # Only the optimizer broken on purpose errs; every other run has its curves.
  errors = [r for r in evals + tunes if r["status"] == "error"]
  assert len(errors) == 3 and {r["optimizer"] for r in errors} == {"broken"}
  ok = [r for r in evals + tunes if r["status"] != "error"]
  assert len(ok) == 15
  for r in ok:
    assert r["train_loss"].shape == (40,) and r["valid_loss"].shape == (4,)
    assert list(r["eval_steps"]) == [10, 20, 30, 40]
    assert r["wall_time"] > 0
  assert {r["seed"] for r in evals} == {0, 1, 2}
  assert {r["seed"] for r in tunes} == {suite.tuning_seed}


def test_second_invocation_trains_nothing(lb):
  stats = leaderboard.run_leaderboard(lb["suite"], lb["opts"], db_path=lb["db"],
                                      progress=False, log=lambda m: None)
  assert stats["trained"] == 0 and stats["compiled"] == 0
  assert stats["skipped"] == 18
  with ResultsDB(lb["db"]) as db:
    assert len(db.runs(lb["suite"].hash)) == 18


def test_interrupted_run_resumes_only_the_missing_runs(lb):
  """Deleting two stored runs (as if the job died before them) re-trains just those,
  and the re-trained curves are identical (same config and seed, same numbers)."""
  with ResultsDB(lb["db"]) as db:
    before = {r["seed"]: r["train_loss"] for r in db.runs(lb["suite"].hash, "eval",
                                                          optimizer="sgd")}
    db.conn.execute("DELETE FROM runs WHERE optimizer='sgd' AND purpose='eval' AND seed>0")
    db.conn.commit()
  stats = leaderboard.run_leaderboard(lb["suite"], lb["opts"], db_path=lb["db"],
                                      progress=False, log=lambda m: None)
  assert stats["trained"] == 2 and stats["skipped"] == 16
  with ResultsDB(lb["db"]) as db:
    after = {r["seed"]: r["train_loss"] for r in db.runs(lb["suite"].hash, "eval",
                                                         optimizer="sgd")}
  assert sorted(after) == [0, 1, 2]
  for seed in (1, 2):
    np.testing.assert_array_equal(after[seed], before[seed])


def test_crashed_runs_are_stored_and_retried_only_on_request(lb):
  with ResultsDB(lb["db"]) as db:
    broken = db.runs(lb["suite"].hash, "eval", optimizer="broken")
  assert len(broken) == 3
  assert all(r["status"] == "error" and "broken on purpose" in r["error"] for r in broken)
  stats = leaderboard.run_leaderboard(lb["suite"], [_broken()], db_path=lb["db"],
                                      progress=False, retry_errors=True, log=lambda m: None)
  assert stats["trained"] == 3 and stats["errors"] == 3  # adam is stored; broken re-ran.


def test_tuning_recorded_with_trials_and_nan_trials_score_inf(lb):
  suite = lb["suite"]
  with ResultsDB(lb["db"]) as db:
    tuning = db.get_tuning(suite.hash, "tuned", "sgd", tiny.LINREG)
    evals = db.runs(suite.hash, "eval", optimizer="sgd")
  lrs = [t["config"]["learning_rate"] for t in tuning["trials"]]
  space = optimizers.spec("sgd").search_space["learning_rate"]
  assert lrs == pytest.approx(space.grid(suite.lr_points))
  for t in tuning["trials"]:
    assert (t["status"] == "ok") == np.isfinite(t["score"])
  # sgd's grid reaches lr >= 1, where linear regression diverges: that trial scores inf.
  assert max(lrs) >= 1.0 and lrs[-1] == max(lrs)
  assert tuning["trials"][-1]["status"] == "diverged"
  assert tuning["trials"][-1]["score"] == float("inf")
  best = min(tuning["trials"], key=lambda t: t["score"])
  assert tuning["best_config"] == best["config"]
  assert all(r["config"] == tuning["best_config"] for r in evals)


def test_scores_and_leakage_from_real_runs(lb):
  with ResultsDB(lb["db"]) as db:
    board = report.compute(db, lb["suite"])
  e = {x["name"]: x for x in board["entrants"]}
  assert set(e) == {"adam", "sgd", "scaled-sgd", "broken"}
  assert e["adam"]["per_task"][tiny.LINREG]["steps_to_target"] <= 40
  # Speedup over the reference: t_adam / t on the one task; NaN when the target is missed.
  t_ref = e["adam"]["per_task"][tiny.LINREG]["steps_to_target"]
  for name in ("sgd", "scaled-sgd"):  # Both reach adam's target on this easy task.
    t = e[name]["per_task"][tiny.LINREG]["steps_to_target"]
    assert t < t_ref
    assert e[name]["speedup_geomean"] == pytest.approx(t_ref / t)
  assert np.isnan(e["broken"]["speedup_geomean"])
  assert e["broken"]["per_task"][tiny.LINREG]["steps_to_target"] == float("inf")
  assert e["broken"]["per_task"][tiny.LINREG]["errors"] == 3
  assert e["scaled-sgd"]["leakage"] == {tiny.LINREG: ["test_eval_linreg_family"]}
  assert e["scaled-sgd"]["meta_cost_hours"] == 0.25 and e["scaled-sgd"]["ruleset"] == "self_tuning"


def test_stored_runs_match_train(lb):
  """The runner's curves equal metaopt.train.train's for the same config and seed."""
  with ResultsDB(lb["db"]) as db:
    run = db.runs(lb["suite"].hash, "eval", optimizer="adam", seed=1)[0]
  ref = train(tiny.linreg_task(), optimizers.get("adam", **run["config"]), 40, seed=1,
              eval_every=10, eval_batches=2)
  assert run["status"] == "ok"
  # float32: the traced learning rate reorders a few roundings.
  np.testing.assert_allclose(run["train_loss"], ref.train_loss, rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(run["valid_loss"], ref.valid_loss, rtol=2e-4, atol=1e-7)
  np.testing.assert_array_equal(run["eval_steps"], ref.eval_steps)


def test_resolve_seeds_and_bad_optimizer():
  s = suites.from_dict(tiny.suite_content())
  assert leaderboard.resolve_seeds(s, None) == [0, 1, 2]
  assert leaderboard.resolve_seeds(s, 2) == [0, 1]
  assert leaderboard.resolve_seeds(s, 5) == [0, 1, 2, 3, 4]
  with pytest.raises(ValueError, match="tuning seed"):
    leaderboard.resolve_seeds(s, [0, 10000])
  with pytest.raises(ValueError, match="Did you mean adam.*Known: .*adam, adamw.*Not a learned optimizer"):
    entrants.parse("adamm")


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


@pytest.mark.skipif(browser.chromium() is None,
                    reason="headless Chromium is not installed (scripts/setup.sh installs "
                           "Debian's chromium package when run as root)")
def test_html_page_renders_in_headless_chromium(lb, tmp_path):
  index = report.write_report(lb["db"], lb["suite"], str(tmp_path / "html"))
  dom = browser.dump_dom(index, tmp_path / "profile")
  # The page's JS ran: it counted rows and loaded images, and sorted by B (steps).
  body = re.search(r"<body[^>]*>", dom).group(0)
  assert 'data-rows="4"' in body
  assert 'data-images-loaded="3/3"' in body  # 1 task curve + 2 profiles.
  widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
  assert len(widths) == 3 and min(widths) > 100
  assert 'data-sorted-by="B (steps)"' in dom
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
  assert entrants.leakage(e, "mlp_digits_w128_d2", ()) == ["mlp_digits_family"]
  assert entrants.leakage(e, "mlp_mnist1d_w128_d2", ()) == []
  with pytest.raises(FileNotFoundError):
    entrants.parse(str(tmp_path / "missing.safetensors"))
