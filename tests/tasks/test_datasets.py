"""tasks.datasets: shapes, split rule, tfds round trip, caches, errors, no network."""

import socket

import numpy as np
import pytest

from tasks import SPLITS, UnknownNameError
from tasks import datasets
from tasks.datasets import sources, splits


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("metaopt_data"))


@pytest.fixture(scope="module", autouse=True)
def no_network():
  """Any connection attempt during these tests fails loudly."""
  original = socket.socket.connect

  def refuse(self, *args, **kwargs):
    raise AssertionError(f"tasks.datasets tried to open a connection to {args}.")

  socket.socket.connect = refuse
  yield
  socket.socket.connect = original


def _check_split_layout(arrays, fields):
  assert set(arrays) == set(SPLITS)
  for split in SPLITS:
    assert sorted(arrays[split]) == sorted(fields), split
    n = {len(v) for v in arrays[split].values()}
    assert len(n) == 1 and n.pop() > 0, split


def test_digits_shapes_and_values(root):
  arrays = datasets.load("digits", root)
  _check_split_layout(arrays, ["image", "label"])
  for split in SPLITS:
    assert arrays[split]["image"].dtype == np.uint8
    assert arrays[split]["image"].shape[1:] == (8, 8, 1)
    assert arrays[split]["label"].dtype == np.int32
  sizes = [len(arrays[s]["label"]) for s in SPLITS]
  assert sum(sizes) == 1797
  np.testing.assert_allclose(np.array(sizes) / 1797, splits.POOL_FRACTIONS, atol=1e-3)
  images = np.concatenate([arrays[s]["image"] for s in SPLITS])
  assert images.max() == 255 and images.min() == 0


def test_digits_matches_sklearn(root):
  """The four splits together are sklearn's digits, 0..16 rescaled, each exactly once."""
  from sklearn.datasets import load_digits
  ref = load_digits()
  arrays = datasets.load("digits", root)
  images = np.concatenate([arrays[s]["image"] for s in SPLITS])[..., 0].astype(np.float64)
  labels = np.concatenate([arrays[s]["label"] for s in SPLITS])
  ours = sorted(zip(labels.tolist(), np.round(images / 255 * 16).astype(int).reshape(-1, 64).tolist()))
  theirs = sorted(zip(ref.target.tolist(), ref.images.astype(int).reshape(-1, 64).tolist()))
  assert ours == theirs


def test_tfds_round_trip_equals_source(root):
  """What the builder wrote and the data source read back equals the raw reader."""
  arrays = datasets.load("digits", root)
  raw = sources.digits()
  for split in SPLITS:
    for field in raw[split]:
      np.testing.assert_array_equal(arrays[split][field], raw[split][field])


def test_prepared_on_disk_and_cached(root, tmp_path):
  import pathlib
  first = datasets.load("digits", root)
  assert datasets.load("digits", root) is first  # in-process memo
  assert list(pathlib.Path(root, "tfds", "metaopt_digits").glob("*/*.array_record-*"))
  npz = pathlib.Path(root, "arrays", "metaopt_digits-1.0.0.npz")
  assert npz.exists()
  datasets._load.cache_clear()
  again = datasets.load("digits", root)
  assert again is not first
  for split in SPLITS:
    np.testing.assert_array_equal(again[split]["image"], first[split]["image"])


def test_arrays_are_read_only(root):
  arrays = datasets.load("digits", root)
  with pytest.raises(ValueError):
    arrays["train"]["image"][0, 0, 0, 0] = 1


def test_deterministic_across_data_dirs(root, tmp_path):
  a = datasets.load("digits", root)
  b = datasets.load("digits", str(tmp_path))
  for split in SPLITS:
    np.testing.assert_array_equal(a[split]["label"], b[split]["label"])


def test_unknown_name_lists_known():
  with pytest.raises(UnknownNameError) as err:
    datasets.load("digitz")
  message = str(err.value)
  assert "digits" in message and "mnist1d" in message


def test_data_dir_env(monkeypatch, tmp_path):
  monkeypatch.setenv("METAOPT_DATA_DIR", str(tmp_path))
  assert datasets.data_dir() == str(tmp_path)
  monkeypatch.delenv("METAOPT_DATA_DIR")
  assert datasets.data_dir().endswith(".cache/metaopt")


def test_info(root):
  meta = datasets.info("digits", root)
  assert meta["num_classes"] == 10
  assert meta["shape"] == (8, 8, 1)
  assert sum(meta["sizes"].values()) == 1797
  assert meta["license"]


def test_split_rule_train_test():
  train = {"x": np.arange(100), "y": np.arange(100) * 2}
  test = {"x": np.arange(1000, 1020), "y": np.arange(1000, 1020) * 2}
  out = splits.from_train_test(train, test)
  assert [len(out[s]["x"]) for s in SPLITS] == [90, 10, 10, 10]
  # train/inner_valid partition the training set; outer_valid/test the test set.
  assert sorted(np.concatenate([out["train"]["x"], out["inner_valid"]["x"]])) == list(range(100))
  assert sorted(np.concatenate([out["outer_valid"]["x"], out["test"]["x"]])) == list(range(1000, 1020))
  for split in SPLITS:  # fields stay aligned
    np.testing.assert_array_equal(out[split]["y"], out[split]["x"] * 2)
  with pytest.raises(ValueError, match="leading dimension"):
    splits.from_train_test({"x": np.zeros(3), "y": np.zeros(4)}, test)
