"""`metaopt amortized train/eval` end to end on a tiny run; config files in the
``get_config`` form; saved runs hold no pickle."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from metaopt import cli
from metaopt.amortized import amortize, experiment, lista, unroll

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AMORTIZED_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "amortized_*.py")))
TINY = ["--method", "alista", "--problem", "lasso_m64_n128_p0.1_snr40", "--set",
        "train.stage_steps=3", "train.val_every=3", "train.val_size=32", "train.num_layers=4",
        "eval.num_test=32", "--wandb", "disabled"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("amortized") / "run")
  assert cli.main(["amortized", "train", *TINY, "--out", out]) == 0
  return out


def test_train_then_eval_writes_table_and_plot(tiny_run, capsys):
  out = tiny_run
  for name in ("experiment.json", "result.json", "result.npz", "metrics.jsonl", "results.md",
               "curves.png"):
    assert os.path.exists(os.path.join(out, name)), name
  first = json.load(open(os.path.join(out, "curves.json")))
  assert set(first) == {"ISTA", "FISTA", "ALISTA"} and len(first["ALISTA"]) == 5
  os.remove(os.path.join(out, "curves.png"))
  capsys.readouterr()
  assert cli.main(["amortized", "eval", "--run", out]) == 0
  assert os.path.exists(os.path.join(out, "curves.png"))
  # Same saved model, same held-out seed: the same numbers.
  assert json.load(open(os.path.join(out, "curves.json"))) == first
  assert "| ALISTA |" in capsys.readouterr().out


def test_no_pickle_and_the_saved_result_round_trips(tiny_run):
  assert not [p for p in os.listdir(tiny_run) if p.endswith((".pkl", ".pickle"))]
  with np.load(os.path.join(tiny_run, "result.npz"), allow_pickle=False) as npz:
    assert npz.files and all(npz[k].dtype != object for k in npz.files)
  config, result = experiment.load(tiny_run)
  assert config.method == "alista" and config.train.num_layers == 4
  assert isinstance(result, lista.LISTAResult) and result.config == config.train.resolved()
  again = str(os.path.join(os.path.dirname(tiny_run), "again"))
  experiment.save(again, config, result)
  _, reread = experiment.load(again)
  for name in ("losses", "w_alista"):
    np.testing.assert_array_equal(getattr(reread, name), getattr(result, name))
  assert (jax.tree_util.tree_structure(reread.params)
          == jax.tree_util.tree_structure(result.params))
  for a, b in zip(jax.tree_util.tree_leaves(result.params),
                  jax.tree_util.tree_leaves(reread.params)):
    np.testing.assert_array_equal(a, b)


def test_save_load_every_result_type(tmp_path):
  """Nested dicts, tuples, None and scalars of each result type survive JSON + npz."""
  cases = [
      (experiment.ExperimentConfig(method="amortized"),
       amortize.AmortizedResult(params={"mlp/~/linear_0": {"w": np.ones((2, 3), np.float32)}},
                                stats={"mean": np.zeros(3)}, config=amortize.AmortizedConfig(),
                                losses=np.arange(4.0), wall_time=1.5)),
      (experiment.ExperimentConfig(method="math_l2o", problem="l1_logreg_d50_n100_lam0.01_scaled2"),
       unroll.UnrollResult(theta={"a": (np.ones(2), None, [np.int32(3)])},
                           config=unroll.UnrollConfig(), losses=np.ones(2), wall_time=2.0)),
  ]
  for i, (config, result) in enumerate(cases):
    run = str(tmp_path / str(i))
    experiment.save(run, config, result)
    loaded_config, loaded = experiment.load(run)
    assert loaded_config == config and type(loaded) is type(result)
    assert loaded.wall_time == result.wall_time
    np.testing.assert_array_equal(loaded.losses, result.losses)
  theta = loaded.theta["a"]
  assert isinstance(theta, tuple) and theta[1] is None and int(theta[2][0]) == 3


def test_crafted_run_dir_cannot_run_code(tiny_run, tmp_path):
  """A pickle dropped into a run directory is never read; an object array in the npz
  is refused by np.load(allow_pickle=False)."""
  import shutil  # pylint: disable=import-outside-toplevel
  crafted = str(tmp_path / "crafted")
  shutil.copytree(tiny_run, crafted)
  marker = tmp_path / "pwned"
  with open(os.path.join(crafted, "result.pkl"), "wb") as f:
    f.write(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
  experiment.load(crafted)
  np.savez(os.path.join(crafted, "result.npz"), losses=np.array([object()], dtype=object))
  with pytest.raises(ValueError, match="allow_pickle"):
    experiment.load(crafted)
  assert not marker.exists()


@pytest.mark.parametrize("path", AMORTIZED_CONFIGS, ids=os.path.basename)
def test_config_files_are_typed_get_config(path):
  cfg = experiment.load_config(path)
  assert isinstance(cfg, experiment.ExperimentConfig)
  assert isinstance(cfg.train, experiment.train_config_class(cfg.method))
  assert "CONFIG" not in open(path).read()
  with pytest.raises(ValueError, match="variant 'pod'"):
    experiment.load_config(f"{path}:pod")


def test_config_values_and_typed_overrides():
  cfg = experiment.load_config(os.path.join(ROOT, "configs", "amortized_lista.py"))
  assert (cfg.method, cfg.train.num_layers, cfg.train.steps, cfg.eval.num_test) == (
      "lista", 16, 2000, 1000)
  # Left at None, the recipe fields follow the method chosen last.
  assert cfg.train.stage_steps is None and cfg.train.resolved() == lista.LISTAConfig(
      variant="lista", num_layers=16).resolved()
  cp = experiment.load_config(os.path.join(ROOT, "configs", "amortized_lista.py"),
                              ["method=lista_cp", "train.steps=7"])
  assert cp.train.variant == "lista_cp" and cp.train.steps == 7
  with pytest.raises(ValueError, match=r"'train.steps' expects int"):
    experiment.load_config(os.path.join(ROOT, "configs", "amortized_lista.py"),
                           ["train.steps=many"])
  with pytest.raises(ValueError, match=r"'train.stepz'.*Did you mean train.steps"):
    experiment.load_config(os.path.join(ROOT, "configs", "amortized_lista.py"),
                           ["train.stepz=3"])


def test_bad_inputs_fail_clearly(tmp_path, capsys):
  """Exit status 2 and one line naming the problem, no traceback."""
  cases = [
      (["train", "--method", "lista", "--problem", "lasso_m64_n128_p0.1_snr40", "--set",
        "train.stepz=3"], "Did you mean train.steps"),
      (["train", "--method", "lista", "--problem", "lasso_tiny"], "Unknown problem"),
      (["train", "--config", str(tmp_path / "missing.py")], "missing.py' does not exist"),
      (["train", "--config", os.path.join(ROOT, "configs", "amortized_lista.py"), "--set",
        "train.steps=abc"], "'train.steps' expects int, got 'abc'"),
      (["train", "--method", "lista"], "Give --method and --problem"),
  ]
  for argv, needle in cases:
    assert cli.main(["amortized", *argv, "--out", str(tmp_path / "run")]) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaopt amortized train: error:") and needle in err, err
    assert len(err.splitlines()) == 1 and not os.path.exists(tmp_path / "run"), argv
  assert cli.main(["amortized", "eval", "--run", str(tmp_path / "nothing")]) == 2
  assert "written by" in capsys.readouterr().err


@pytest.mark.parametrize("variant", lista.VARIANTS)
def test_every_lista_variant_passes_the_saved_run_checks(variant):
  """A network of each variant, as ``lista.train`` builds it, fits the shapes that
  loading a run directory expects (and a misshaped one does not)."""
  problem = "lasso_m64_n128_p0.1_snr40"
  config = experiment.ExperimentConfig(method=variant, problem=problem,
                                       train=lista.LISTAConfig(num_layers=2))
  resolved = config.train.resolved()
  pb = experiment.get_problem(problem)
  params = lista.init_params(pb, variant, 2, resolved.init)
  result = lista.LISTAResult(params, resolved, np.zeros(0), 0.0)
  experiment.check_learned(config, result, "the run")
  deeper = lista.LISTAResult(lista.init_params(pb, variant, 3, resolved.init), resolved,
                             np.zeros(0), 0.0)
  with pytest.raises(experiment.RunFileError, match="shape"):
    experiment.check_learned(config, deeper, "the run")
