"""Sealed held-out data (leaderboard v3): the suite's datasets are registered as
sealed, meta-training refuses them unless forced, and no shipped optimizer touched one."""

import pytest

import tasks
import metaopt
from metaopt.eval import entrants as E
from metaopt.eval import suites as S
from metaopt.meta import MetaTrainer, load_config
from tasks import sealed


def test_every_v3_dataset_is_sealed():
  suite = S.load("v3")
  assert suite.sealed
  for st in suite.tasks:
    meta = dict(tasks.get(st.task).metadata)
    if meta["dataset"] == tasks.SYNTHETIC:
      # Generated problems: sealed by class, except quadratics (open for L2O research;
      # a rule meta-trained on them is ineligible by the leakage rule instead).
      assert meta["architecture"] in sealed.SEALED_SYNTHETIC or \
          meta["architecture"] == "quadratic", st.task
    else:
      assert sealed.SEALED_DATASETS.get(meta["dataset"]) == "v3", st.task


@pytest.mark.parametrize("name", metaopt.pretrained_names())
def test_shipped_optimizers_are_eligible_for_v3(name):
  ent = E.parse(name)
  families = {f: (None, None) for f in ent.trained_on}
  for d in ent.trained_on_datasets:
    families[f"<dataset {d}>"] = (d, None)
  assert sealed.overlap(families) == []
  suite = S.load("v3")
  meta = {st.task: dict(tasks.get(st.task).metadata) for st in suite.tasks}
  assert E.ineligibility(ent, suite, meta) == {}


def test_meta_training_on_a_sealed_dataset_is_refused(tmp_path):
  fam = tasks.mlp.mlp_family("mnist_5k", name="mlp_mnist5k_test_family")
  cfg = load_config("mlp_digits", [f"run.run_dir={tmp_path}", "family=mlp_digits_family"])
  with pytest.raises(sealed.SealedDataError, match="dataset mnist_5k.*allow_sealed"):
    MetaTrainer(cfg, family=fam)
  forced = load_config("mlp_digits", [f"run.run_dir={tmp_path}", "family=mlp_digits_family",
                                      "run.allow_sealed=True"])
  trainer = MetaTrainer(forced, family=fam)
  assert trainer.sealed_used == ["dataset mnist_5k (sealed by v3)"]


def test_generated_classic_functions_are_sealed():
  with pytest.raises(sealed.SealedDataError, match="rosenbrock_d10_family"):
    sealed.check_meta_training({"rosenbrock_d10_family": ("synthetic", "classic_function")})
  assert sealed.check_meta_training({"quadratic_family": ("synthetic", "quadratic")}) == []
