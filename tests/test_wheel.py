"""The drop-in install: ``pip install metaopt-jax`` (the core: jax, optax, numpy,
safetensors) loads every shipped learned optimizer and steps with it.

``test_core_path_imports_no_optional_dependency`` checks in a fresh interpreter that
``metaopt.load`` (every shipped optimizer) and ``metaopt.safeguard`` import none of the
extras' packages.
``test_wheel_core_install_loads_every_shipped_optimizer`` (about 35 s, most of it pip)
builds the wheel, installs it with its core dependencies only (at constraints.txt's
versions, from pip's index or cache) into a clean virtual environment and runs the same
script there, outside the checkout, stepping with every shipped optimizer.
"""

import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Packages of the extras ([meta], [data], [leaderboard], [wandb]) the core must not need.
OPTIONAL = ("haiku", "tensorflow_datasets", "tensorflow", "wandb", "orbax", "sklearn",
            "matplotlib", "tqdm", "mnist1d", "array_record")

# Loads every shipped optimizer, takes one step with it (and with it safeguarded), and
# prints what it imported and which optional packages are installed at all.
SCRIPT = r"""
import importlib.util, json, sys
import jax, jax.numpy as jnp, numpy as np, optax
import metaopt
from tasks.base import ParamInfo

OPTIONAL = %r
params = {"w1": jnp.full((4, 8), 0.1), "b1": jnp.zeros(8), "w2": jnp.full((8, 3), 0.1)}
info = {"w1": ParamInfo("input", 4, 8), "b1": ParamInfo("bias", 1, 8),
        "w2": ParamInfo("output", 8, 3)}
x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4)), jnp.float32)

def loss(p):
  return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] - 1.0) ** 2)

steps = {}
names = metaopt.pretrained_names()
stepped = names + ["safeguarded general-v2"] if sys.argv[1:] == ["step"] else []
for name in names:  # Every one loads (header, architecture, arrays)...
  metaopt.load(name, param_info=info if "mup" in name else None)
for name in stepped:  # ... and takes one step.
  if name.startswith("safeguarded"):
    opt = metaopt.safeguard(metaopt.load("general-v2"), fallback=optax.adam(1e-3))
  else:
    opt = metaopt.load(name, param_info=info if "mup" in name else None)
  state = opt.init(params)
  value, grads = jax.value_and_grad(loss)(params)
  updates, state = opt.update(grads, state, params, value=value)
  new = optax.apply_updates(params, updates)
  finite = all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree_util.tree_leaves(updates))
  steps[name] = {"finite": finite, "moved": float(sum(jnp.sum(jnp.abs(u))
                 for u in jax.tree_util.tree_leaves(updates))),
                 "loss_after": float(loss(new)), "loss_before": float(value)}
print(json.dumps({
    "names": names, "steps": steps,
    "imported": sorted({m.split(".")[0] for m in sys.modules} & set(OPTIONAL)),
    "installed": sorted(m for m in OPTIONAL if importlib.util.find_spec(m) is not None),
    "metaopt_file": metaopt.__file__,
}))
""" % (OPTIONAL,)


def _check(report, expect_installed_optional, stepped):
  from metaopt import pretrained
  assert report["names"] == pretrained.names() and len(report["names"]) >= 4
  if stepped:
    assert set(report["steps"]) == set(report["names"]) | {"safeguarded general-v2"}
  for name, step in report["steps"].items():
    assert step["finite"] and step["moved"] > 0, (name, step)
  assert report["imported"] == [], report["imported"]
  if not expect_installed_optional:
    assert report["installed"] == [], report["installed"]


def test_core_path_imports_no_optional_dependency(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, check=True,
                       capture_output=True, text=True, timeout=300).stdout
  _check(json.loads(out.strip().splitlines()[-1]), expect_installed_optional=True,
         stepped=False)


def _copy_source(dest):
  """The files a wheel is built from (not the checkout's build leftovers)."""
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), dest)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for package in ("metaopt", "tasks"):
    shutil.copytree(os.path.join(ROOT, package), os.path.join(dest, package), ignore=ignore)


def test_wheel_core_install_loads_every_shipped_optimizer(tmp_path):
  src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
  src.mkdir()
  _copy_source(src)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                  str(src)], check=True, timeout=600)
  wheel = next(dist.glob("metaopt_jax-*.whl"))
  import zipfile
  shipped = zipfile.ZipFile(wheel).namelist()
  for must in ("metaopt/pretrained/general-v2.safetensors", "metaopt/configs/mlp_digits.py",
               "metaopt/eval/suites/v2.json"):
    assert must in shipped, must
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
  py = str(venv / "bin" / "python")
  t0 = time.time()
  subprocess.run([py, "-m", "pip", "install", "-q", "-c", os.path.join(ROOT, "constraints.txt"),
                  str(wheel)], check=True, timeout=600)
  print(f"core install: {time.time() - t0:.1f}s")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("PYTHONPATH", None)
  out = subprocess.run([py, "-c", SCRIPT, "step"], cwd=tmp_path, env=env, check=True,
                       capture_output=True, text=True, timeout=300).stdout
  report = json.loads(out.strip().splitlines()[-1])
  assert str(venv) in report["metaopt_file"]  # The installed wheel, not the checkout.
  _check(report, expect_installed_optional=False, stepped=True)
  # The shipped configs resolve by name from the installed package (metaopt demo's).
  out = subprocess.run([py, "-c", "from metaopt import typed_config as t; "
                        "print(t.resolve_config('mlp_digits'), t.resolve_config("
                        "'configs/mlp_digits.py'))"], cwd=tmp_path, env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert all(p.startswith(str(venv)) and os.path.exists(p) for p in out), out
  # The CLI starts: `list pretrained` works, a command that needs an extra says which.
  metaopt_cli = str(venv / "bin" / "metaopt")
  listed = subprocess.run([metaopt_cli, "list", "pretrained"], cwd=tmp_path, env=env,
                          check=True, capture_output=True, text=True).stdout
  assert "general-v2" in listed
  proc = subprocess.run([metaopt_cli, "amortized", "train"], cwd=tmp_path, env=env,
                        capture_output=True, text=True)
  assert proc.returncode == 2 and "metaopt-jax[all]" in proc.stderr, proc.stderr
