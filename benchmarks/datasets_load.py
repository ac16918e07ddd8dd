"""Load time of tasks.datasets: tfds data-source decoding vs the .npz array cache.

Prepares each dataset into a fresh temporary data dir (so nothing is reused), then
times, side by side in one process: (a) the one-time ``download_and_prepare`` of the
array_record files from the local source, (b) reading every record back through
``builder.as_data_source()`` into arrays, (c) ``load`` from the .npz cache written
after the first read (the path every later process takes). Prints the ratio b / c.

  python benchmarks/datasets_load.py [name ...]   # default: digits mnist_5k fashion_mnist
"""

import argparse
import platform
import tempfile
import time

from tasks import datasets
from tasks.datasets import sources


def measure(name: str, root: str) -> dict:
  t0 = time.perf_counter()
  builder = datasets.prepare(name, root)
  t1 = time.perf_counter()
  arrays = datasets._read_data_source(builder, type(builder).records_to_arrays)
  t2 = time.perf_counter()
  datasets.load(name, root)  # writes the .npz cache (reads the records once more)
  datasets._load.cache_clear()
  t3 = time.perf_counter()
  datasets.load(name, root)
  t4 = time.perf_counter()
  n = sum(len(next(iter(a.values()))) for a in arrays.values())
  return dict(name=name, examples=n, prepare_s=t1 - t0, data_source_s=t2 - t1, npz_s=t4 - t3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", default=["digits", "mnist_5k", "fashion_mnist"])
  args = parser.parse_args()
  print(f"machine: {platform.machine()}, python {platform.python_version()}")
  print(f"{'dataset':<14}{'examples':>9}{'prepare s':>11}{'data source s':>15}"
        f"{'npz s':>8}{'ratio':>8}")
  for name in args.names:
    with tempfile.TemporaryDirectory() as root:
      if name == "fashion_mnist" and sources.fashion_mnist_dir(datasets.data_dir()) is None:
        print(f"{name:<14} skipped: Debian dataset-fashion-mnist absent")
        continue
      r = measure(name, root)
    print(f"{r['name']:<14}{r['examples']:>9}{r['prepare_s']:>11.2f}{r['data_source_s']:>15.2f}"
          f"{r['npz_s']:>8.3f}{r['data_source_s'] / r['npz_s']:>7.0f}x")


if __name__ == "__main__":
  main()
