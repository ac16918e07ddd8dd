"""Every registered task and family describes itself: ``metadata["dataset"]`` (a
``tasks.datasets`` name or ``"synthetic"``), ``metadata["architecture"]`` (one of
``tasks.ARCHITECTURES``), ``metadata["family"]`` on a family's members, and an
``error_rate`` on classifiers.

Building a task loads its dataset (cached .npz files), so the registry-wide loops
are slow; the fast default covers one entry per module."""

import jax
import pytest

import tasks
from tasks import datasets

#: Entries checked in the default (fast) run.
FAST = {"mlp_digits_w32_d2", "quadratic_d10_cond10", "rosenbrock_d2",
        "logistic_synthetic_d32_sep4", "conv_digits_c8x2", "lasso_m64_n128_p0.1_snr40",
        "least_squares_m16_n8_cond100", "mlp_digits_w32_d2_family", "quadratic_family",
        "rosenbrock_d10_family", "logistic_synthetic_family", "quadratic_d8_cond100"}
#: Architectures whose tasks are classifiers and so must have an error rate.
CLASSIFIERS = {"mlp", "conv", "transformer", "linear"}


def _params(names):
  return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


def _check(metadata, where):
  dataset, arch = metadata.get("dataset"), metadata.get("architecture")
  assert dataset == tasks.SYNTHETIC or dataset in datasets.names(), (where, dataset)
  assert arch in tasks.ARCHITECTURES, (where, arch)
  # Data-free kinds have no dataset; data models have one.
  if arch in ("quadratic", "classic_function", "sparse_problem", "problem"):
    assert dataset == tasks.SYNTHETIC, (where, dataset)


def test_vocabulary():
  assert set(tasks.ARCHITECTURES) == {"mlp", "conv", "transformer", "linear", "quadratic",
                                      "classic_function", "sparse_problem", "problem",
                                      "autoencoder"}


@pytest.mark.parametrize("name", _params(tasks.task_names()))
def test_task_metadata(name):
  task = tasks.get(name)
  _check(task.metadata, name)
  assert "family" not in task.metadata  # A registered task is not a family member.
  if task.metadata["architecture"] in CLASSIFIERS:
    assert task.error_rate is not None, f"{name} is a classifier without error_rate"


@pytest.mark.parametrize("name", _params(tasks.family_names()))
def test_family_and_member_metadata(name):
  family = tasks.get_family(name)
  _check(family.metadata, name)
  member = family.task(family.sample(jax.random.PRNGKey(0)))
  _check(member.metadata, member.name)
  assert member.metadata["family"] == name
  assert member.metadata["architecture"] == family.metadata["architecture"]
  assert member.metadata["dataset"] == family.metadata["dataset"]
  if member.metadata["architecture"] in CLASSIFIERS:
    assert member.error_rate is not None
