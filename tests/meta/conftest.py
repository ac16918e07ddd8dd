"""Meta-training tests compile the same small programs in several processes (a run, its
killed copy, its resume): share them through JAX's persistent compilation cache."""

import os
import tempfile

import jax
import pytest

_CACHE = os.path.join(tempfile.gettempdir(), "metaopt_test_jax_cache")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE  # Inherited by subprocesses.
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
