"""Learned-optimizer weight files: every malformed header or tensor is a
``LoptFileError`` naming the file, a local file never shadows a shipped optimizer, a
FIFO does not block, and nonsense arguments to ``load`` are refused
(docs/reliability.md)."""

import json
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import metaopt
from metaopt import lopt
from metaopt.lopt import io


@pytest.fixture(scope="module")
def adam():
  opt = lopt.build("adam", {})
  return opt, opt.init_meta_params(None)


def _tensors(theta):
  return {k: np.asarray(v) for k, v in io.flatten_named(theta).items()}


def _write(path, tensors, header=None, raw_header=None):
  text = raw_header if raw_header is not None else json.dumps(header)
  path.write_bytes(safetensors.numpy.save(tensors, metadata={io.HEADER_KEY: text}))
  return path


def _header(arch, config, metadata=None):
  return {"format_version": 1, "arch": arch, "config": config, "metadata": metadata or {}}


def _refused(path, match):
  with pytest.raises(io.LoptFileError, match=match) as info:
    io.load_meta_params(path)
  assert str(path) in str(info.value)  # Every message names the file.


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_header_config_refused(tmp_path, adam, bad):
  opt, theta = adam
  raw = json.dumps(_header("adam", {"learning_rate": 0.5})).replace("0.5", bad)
  _refused(_write(tmp_path / "x.safetensors", _tensors(theta), raw_header=raw),
           r"learning_rate=.* is not finite")


@pytest.mark.parametrize("dtype", [np.int32, np.bool_])
def test_int_and_bool_tensors_refused(tmp_path, dtype):
  opt = lopt.build("mlp", {"hidden_sizes": [4]})
  tensors = _tensors(opt.init_meta_params(jax.random.PRNGKey(0)))
  name = sorted(tensors)[0]
  tensors[name] = tensors[name].astype(dtype)
  path = _write(tmp_path / "x.safetensors", tensors,
                _header("mlp", lopt.config_to_dict(opt.config)))
  _refused(path, rf"wrong dtype: '{name}' is {np.dtype(dtype)}, expected float32")


def test_deeply_nested_header_is_a_clear_error(tmp_path, adam):
  _, theta = adam
  deep = "[" * 100000 + "]" * 100000
  raw = json.dumps(_header("adam", {})).replace('"metadata": {}', f'"metadata": {deep}')
  _refused(_write(tmp_path / "deep.safetensors", _tensors(theta), raw_header=raw),
           "nested too deeply|nested deeper")
  shallow = json.dumps(_header("adam", {})).replace('"metadata": {}',
                                                   '"metadata": {"x": ' + "[" * 40 + "]" * 40 + "}")
  _refused(_write(tmp_path / "d2.safetensors", _tensors(theta), raw_header=shallow),
           "nested deeper than 32")


@pytest.mark.parametrize("sizes", [[-4], [0], [4, -1]])
def test_non_positive_hidden_sizes_refused(tmp_path, sizes):
  opt = lopt.build("mlp", {"hidden_sizes": [4]})
  tensors = _tensors(opt.init_meta_params(jax.random.PRNGKey(0)))
  path = _write(tmp_path / "x.safetensors", tensors, _header("mlp", {"hidden_sizes": sizes}))
  _refused(path, r"hidden_sizes=.*sizes and counts must be >= 1")


@pytest.mark.parametrize("metadata,match", [
    ({"trained_on": "mlp_family"}, "trained_on must be a list"),
    ({"trained_on": [1, 2]}, "trained_on must be a list"),
    ({"meta_training_device_hours": "lots"}, "meta_training_device_hours must be"),
    ({"description": 3}, "description must be a string")])
def test_malformed_metadata_refused(tmp_path, adam, metadata, match):
  _, theta = adam
  _refused(_write(tmp_path / "x.safetensors", _tensors(theta),
                  _header("adam", {}, metadata)), match)


@pytest.mark.parametrize("header,match", [
    ({"format_version": 1, "arch": ["adam"], "config": {}}, "arch must be a string"),
    ({"format_version": 1, "arch": "adam", "config": {}, "metadata": [1]},
     "metadata must be a JSON object"),
    ({"format_version": 1, "arch": "adam", "config": []}, "config must be a JSON object"),
    ({"format_version": "x", "arch": "adam", "config": {}}, "corrupt metaopt header"),
    ({"format_version": 1, "arch": "nope", "config": {}}, "cannot build"),
    ({"format_version": 1, "arch": "adam", "config": {"b1": "high"}}, "cannot build")])
def test_malformed_fields_name_the_file(tmp_path, adam, header, match):
  _, theta = adam
  _refused(_write(tmp_path / "x.safetensors", _tensors(theta), header), match)


def test_local_file_or_folder_does_not_shadow_a_shipped_optimizer(tmp_path, monkeypatch, adam):
  opt, theta = adam
  monkeypatch.chdir(tmp_path)
  shipped = io.pretrained_names()[0]
  io.save(tmp_path / "tmp.safetensors", opt, theta)
  os.replace(tmp_path / "tmp.safetensors", tmp_path / shipped)  # A local file ...
  assert io.resolve(shipped) == io.PRETRAINED_DIR / f"{shipped}.safetensors"
  assert io.load_meta_params(shipped)[0].arch != "adam"
  assert io.load_meta_params(f"./{shipped}")[0].arch == "adam"  # ... read as a path.
  (tmp_path / "not-shipped").mkdir()  # A local folder with a bare name: a hint.
  with pytest.raises(KeyError, match=r"Unknown pretrained .*pass it as a path, ./not-shipped"):
    io.resolve("not-shipped")


def test_fifo_is_refused_not_read(tmp_path):
  fifo = tmp_path / "pipe.safetensors"
  os.mkfifo(fifo)
  result = {}
  reader = threading.Thread(target=lambda: result.update(
      error=pytest.raises(io.LoptFileError, io.load_meta_params, fifo)), daemon=True)
  reader.start()
  reader.join(timeout=20)
  assert not reader.is_alive(), "load blocked on a FIFO"
  assert "not a regular file" in str(result["error"].value)


@pytest.mark.parametrize("num_steps", [0, -5, 2.5, True])
def test_load_refuses_nonsense_num_steps(num_steps):
  with pytest.raises(ValueError, match="num_steps must be None .* integer >= 1"):
    metaopt.load(io.pretrained_names()[0], num_steps=num_steps)


@pytest.mark.parametrize("params", [{}, [], ()])
def test_loaded_optimizer_refuses_empty_params(params):
  opt = metaopt.load("general-v2")
  with pytest.raises(ValueError, match="parameters without any array"):
    opt.init(params)
  opt.init({"w": jnp.ones(3)})  # Real parameters still work.
