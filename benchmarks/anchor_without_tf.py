"""Runs the learned_optimization anchor (``lo_pes_bench.py``) where TensorFlow is absent.

learned_optimization 0.0.1 imports TensorFlow, tensorflow-datasets and flax's
TensorBoard writer at module level, for datasets and summaries that the PES throughput
benchmark never calls. On a machine without them (the lent GPU machine has no
TensorFlow, and its wheels exceed what can be carried there) this wrapper puts inert
stand-ins in ``sys.modules`` and then runs the anchor script unchanged:

  python benchmarks/anchor_without_tf.py PATH/TO/lo_pes_bench.py [its arguments]

Any use of a stand-in beyond attribute access returns another stand-in, so a code path
that really needed TensorFlow would fail loudly in the anchor's own checks (its
meta-loss is printed) rather than silently change the benchmark.
"""

import importlib.abc
import importlib.machinery
import runpy
import sys
import types


class _Inert:
  """Callable, subscriptable, attribute-bearing placeholder; usable as a base class."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __call__(self, *args, **kwargs):
    return _Inert()

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _Inert()

  def __getitem__(self, key):
    return _Inert()

  def __iter__(self):
    return iter(())

  def __mro_entries__(self, bases):
    return (object,)


class _InertModule(types.ModuleType):

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _Inert()


STUBBED = ("tensorflow", "tensorflow_datasets", "flax.metrics.tensorboard")


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves a stand-in for ``prefix`` and every submodule under it."""

  def __init__(self, prefixes):
    self.prefixes = tuple(prefixes)

  def find_spec(self, name, path, target=None):
    if any(name == p or name.startswith(p + ".") for p in self.prefixes):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _InertModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


def main():
  if len(sys.argv) < 2:
    raise SystemExit(__doc__)
  try:
    import tensorflow  # noqa: F401  (only whether it imports matters)
    missing = []
  except ImportError:  # then tfds and flax's TensorBoard writer are unusable too
    missing = list(STUBBED)
    for name in STUBBED:
      sys.modules.pop(name, None)
  sys.meta_path.insert(0, _InertFinder(missing))
  print(f"anchor_without_tf: stand-ins for {missing}", flush=True)
  script = sys.argv[1]
  sys.argv = sys.argv[1:]
  runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
  main()
