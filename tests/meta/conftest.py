"""Meta-training tests compile the same small programs in several processes (a run, its
killed copy, its resume): share them through JAX's persistent compilation cache, for
this test package only (restored afterwards)."""

import os
import tempfile

import jax
import pytest

_CACHE = os.path.join(tempfile.gettempdir(), "metaopt_test_jax_cache")
_ENV = {"JAX_COMPILATION_CACHE_DIR": _CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="package", autouse=True)
def compilation_cache():
  old_env = {k: os.environ.get(k) for k in _ENV}
  old_dir = jax.config.jax_compilation_cache_dir
  old_min = jax.config.jax_persistent_cache_min_compile_time_secs
  os.environ.update(_ENV)  # Inherited by the subprocesses of these tests.
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
  jax.config.update("jax_compilation_cache_dir", old_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
  for k, v in old_env.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture(scope="module")
def test_names():
  """The test family and optimizer registered under the names the tiny config uses."""
  from tests.meta.helpers import registered_test_names  # pylint: disable=import-outside-toplevel
  with registered_test_names():
    yield
