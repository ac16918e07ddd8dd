"""Save/load of learned optimizers: round trip and every bad-file error."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import metaopt
from metaopt import lopt
from metaopt.lopt import io


@pytest.fixture(scope="module")
def small():
  opt = lopt.build("mlp", {"hidden_sizes": [4, 4]})
  return opt, opt.init_meta_params(jax.random.PRNGKey(7))


def test_round_trip_identical_updates(tmp_path, small):
  opt, theta = small
  meta = {"trained_on": ["quadratic"], "meta_training_device_hours": 0.5,
          "description": "test", "license": "CC-BY-4.0", "extra": [1, 2]}
  path = io.save(tmp_path / "sub" / "opt.safetensors", opt, theta, meta)
  assert not [p for p in path.parent.iterdir() if p.name != "opt.safetensors"]  # no tmp left
  opt2, theta2, meta2 = io.load_meta_params(path)
  assert opt2.arch == "mlp" and opt2.config == opt.config and meta2 == meta
  jax.tree_util.tree_map(np.testing.assert_array_equal, theta, theta2)

  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros((3,))}
  grads = jax.tree_util.tree_map(jnp.sin, params)
  tx1, tx2 = opt.transform(theta), metaopt.load(str(path))
  u1 = jax.jit(tx1.update)(grads, tx1.init(params), params)[0]
  u2 = jax.jit(tx2.update)(grads, tx2.init(params), params)[0]
  jax.tree_util.tree_map(np.testing.assert_array_equal, u1, u2)


def test_standard_metadata_defaults(tmp_path):
  opt = lopt.build("adam", {})
  path = io.save(tmp_path / "a.safetensors", opt, opt.init_meta_params(None))
  _, _, meta = io.load_meta_params(path)
  assert meta == {k: None for k in io.STANDARD_METADATA}
  with pytest.raises(io.LoptFileError, match="holds a 'adam'.*not 'mlp'"):
    io.load_meta_params(path, arch="mlp")


def _write_raw(path, tensors, header):
  path.write_bytes(safetensors.numpy.save(tensors, metadata={io.HEADER_KEY: json.dumps(header)}))


def test_shape_mismatch_names_tensor(tmp_path, small):
  opt, theta = small
  tensors = {k: np.asarray(v) for k, v in io.flatten_named(theta).items()}
  tensors["layers/1/w"] = np.zeros((4, 5), np.float32)
  header = {"format_version": 1, "arch": "mlp", "config": lopt.config_to_dict(opt.config),
            "metadata": {}}
  _write_raw(tmp_path / "bad.safetensors", tensors, header)
  with pytest.raises(io.LoptFileError, match=r"'layers/1/w' has shape \(4, 5\).*expects \(4, 4\)"):
    io.load_meta_params(tmp_path / "bad.safetensors")


def test_wrong_architecture(tmp_path, small):
  opt, theta = small
  tensors = {k: np.asarray(v) for k, v in io.flatten_named(theta).items()}
  header = {"format_version": 1, "arch": "adam", "config": {}, "metadata": {}}
  _write_raw(tmp_path / "w.safetensors", tensors, header)
  with pytest.raises(io.LoptFileError, match="missing tensor 'log_lr'.*unexpected tensor"):
    io.load_meta_params(tmp_path / "w.safetensors")
  with pytest.raises(ValueError, match="does not match"):
    io.save(tmp_path / "x.safetensors", lopt.build("adam", {}), theta)


def test_newer_format_says_upgrade(tmp_path):
  opt = lopt.build("adam", {})
  tensors = {k: np.asarray(v) for k, v in io.flatten_named(opt.init_meta_params(None)).items()}
  _write_raw(tmp_path / "n.safetensors", tensors,
             {"format_version": io.FORMAT_VERSION + 1, "arch": "adam", "config": {}})
  with pytest.raises(io.LoptFileError, match="newer.*Upgrade metaopt"):
    io.load(tmp_path / "n.safetensors")


def test_truncated_and_foreign_files(tmp_path, small):
  opt, theta = small
  path = io.save(tmp_path / "t.safetensors", opt, theta)
  data = path.read_bytes()
  (tmp_path / "cut.safetensors").write_bytes(data[:len(data) // 2])
  with pytest.raises(io.LoptFileError, match="truncated or corrupt"):
    io.load_meta_params(tmp_path / "cut.safetensors")
  (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
  with pytest.raises(io.LoptFileError, match="truncated or corrupt"):
    io.load_meta_params(tmp_path / "junk.safetensors")
  (tmp_path / "plain.safetensors").write_bytes(safetensors.numpy.save({"x": np.zeros(2)}))
  with pytest.raises(io.LoptFileError, match="not a metaopt"):
    io.load_meta_params(tmp_path / "plain.safetensors")


def _tensors(theta):
  return {k: np.array(v) for k, v in io.flatten_named(theta).items()}


def _header(opt, **overrides):
  return dict({"format_version": 1, "arch": opt.arch,
               "config": lopt.config_to_dict(opt.config), "metadata": {}}, **overrides)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused(tmp_path, small, bad):
  opt, theta = small
  tensors = _tensors(theta)
  tensors["layers/0/w"][0, 0] = bad
  _write_raw(tmp_path / "nan.safetensors", tensors, _header(opt))
  with pytest.raises(io.LoptFileError, match=r"non-finite weights.*'layers/0/w' \(1 of"):
    io.load_meta_params(tmp_path / "nan.safetensors")
  all_nan = {k: np.full_like(v, np.nan) for k, v in _tensors(theta).items()}
  _write_raw(tmp_path / "allnan.safetensors", all_nan, _header(opt))
  with pytest.raises(io.LoptFileError, match="diverged meta-training"):
    metaopt.load(str(tmp_path / "allnan.safetensors"))


@pytest.mark.parametrize("version", [0, -3])
def test_format_version_below_one_is_refused(tmp_path, small, version):
  opt, theta = small
  _write_raw(tmp_path / "v.safetensors", _tensors(theta), _header(opt, format_version=version))
  with pytest.raises(io.LoptFileError, match=f"format version {version}; versions start at 1"):
    io.load_meta_params(tmp_path / "v.safetensors")


def test_directory_and_wrongly_typed_config_give_one_line(tmp_path, small):
  opt, theta = small
  io.save(tmp_path / "d" / "inner.safetensors", opt, theta)
  with pytest.raises(io.LoptFileError, match="is a directory.*It holds: inner.safetensors"):
    io.load_meta_params(str(tmp_path / "d"))
  _write_raw(tmp_path / "typed.safetensors", _tensors(theta),
             _header(opt, config={"hidden_sizes": "abc"}))
  with pytest.raises(io.LoptFileError) as err:
    io.load_meta_params(tmp_path / "typed.safetensors")
  assert "'hidden_sizes' expects tuple of int, got 'abc'" in str(err.value)
  assert "\n" not in str(err.value)
  _write_raw(tmp_path / "notdict.safetensors", _tensors(theta), _header(opt, config=[1]))
  with pytest.raises(io.LoptFileError, match="config must be a JSON object"):
    io.load_meta_params(tmp_path / "notdict.safetensors")


def test_unknown_name_lists_shipped(tmp_path):
  with pytest.raises(KeyError, match="Unknown pretrained learned optimizer 'nope'.*Shipped"):
    metaopt.load("nope")
  with pytest.raises(FileNotFoundError):
    metaopt.load(str(tmp_path / "missing.safetensors"))


def test_remove_stale_temporaries_of_a_killed_save(tmp_path):
  target = tmp_path / "theta.safetensors"
  stale = tmp_path / ".theta.safetensors.abc123.tmp"
  stale.write_bytes(b"half written")
  other = tmp_path / ".other.safetensors.x.tmp"  # Another file's temporary: kept.
  other.write_bytes(b"")
  assert io.remove_stale_temporaries(target) == [str(stale)]
  assert not stale.exists() and other.exists()
  assert io.remove_stale_temporaries(tmp_path / "missing_dir" / "x.safetensors") == []
