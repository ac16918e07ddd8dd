"""Configs: nested sections, typed overrides, validation at load, presets, old dicts."""

import glob
import json
import os

import pytest

from metaopt import lopt as lopt_lib
from metaopt import typed_config
from metaopt.meta import config as C
from metaopt.meta import presets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Meta-training configs (other config files in configs/ belong to other commands).
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if "MetaTrainConfig" in open(p).read())
# to_dict() of every config file and variant, written by the flat config before the
# sections and shared presets (to check that they changed no number).
BEFORE = os.path.join(os.path.dirname(__file__), "data", "flat_configs_before_nesting.json")


def flatten_to_legacy(nested):
  """A nested ``to_dict()`` in the flat pre-sections form (inverse of LEGACY_KEYS)."""
  out = {k: v for k, v in nested.items() if not isinstance(v, dict) or k == "lopt_config"}
  if out.get("family_name") == "":  # Added after the flat form (family objects).
    del out["family_name"]
  for old, (section, name) in C.LEGACY_KEYS.items():
    out[old] = nested[section][name]
  return out


def test_presets_reproduce_every_config_exactly():
  before = json.load(open(BEFORE))
  assert len(before) == 15
  for key, old in before.items():
    new = C.load_config(os.path.join(ROOT, key))
    flat = json.loads(json.dumps(flatten_to_legacy(new.to_dict())))  # tuples -> lists
    assert flat == old, key


def test_nested_overrides_are_typed():
  cfg = C.apply_overrides(C.MetaTrainConfig(), [
      "estimator.num_tasks=16", "outer.lr=1e-2", "estimator.name=tbptt",
      "schedule.random_offsets=False", "lopt_config.hidden_sizes=(16, 16)"])
  assert cfg.estimator.num_tasks == 16 and cfg.outer.lr == 0.01
  assert cfg.estimator.name == "tbptt" and cfg.schedule.random_offsets is False
  assert cfg.lopt_config == {"hidden_sizes": (16, 16)}
  widened = C.apply_overrides(cfg, ["outer.lr=1", "lopt_config.timescales=[1, 3]"])
  assert widened.outer.lr == 1.0 and isinstance(widened.outer.lr, float)
  assert widened.lopt_config["timescales"] == (1.0, 3.0)  # list -> tuple of float
  assert widened.estimator.num_tasks == 16  # other fields of the section kept


@pytest.mark.parametrize("override, match", [
    ("estimator.num_tasks=many", r"'estimator.num_tasks' expects int, got 'many' \(str\)"),
    ("estimator.sigma=True", r"'estimator.sigma' expects float"),
    ("lopt_config.hidden_sizes=(16, 'a')", r"'lopt_config.hidden_sizes\[1\]' expects int"),
    ("estimator.mix_weights={'pes': 'x'}", r"'estimator.mix_weights.pes' expects float"),
    ("schedule=3", r"'schedule' expects a TruncationSchedule"),
])
def test_wrong_types_name_the_key_and_type(override, match):
  with pytest.raises(ValueError, match=match):
    C.apply_overrides(C.MetaTrainConfig(), [override])


def test_unknown_keys_suggest_close_matches():
  with pytest.raises(ValueError, match=r"'estimator.sigm'.*Did you mean estimator.sigma\?"):
    C.apply_overrides(C.MetaTrainConfig(), ["estimator.sigm=0.1"])
  with pytest.raises(ValueError, match=r"'sigma'.*Did you mean estimator.sigma"):
    C.apply_overrides(C.MetaTrainConfig(), ["sigma=0.1"])
  with pytest.raises(ValueError, match=r"'lopt_config.hidden_size'.*lopt_config.hidden_sizes"):
    C.apply_overrides(C.MetaTrainConfig(), ["lopt_config.hidden_size=(4,)"])
  with pytest.raises(ValueError, match="key=value"):
    C.apply_overrides(C.MetaTrainConfig(), ["estimator.num_tasks"])
  for message in ("a", "b"):  # one line, whatever the key
    try:
      C.apply_overrides(C.MetaTrainConfig(), [f"outer.{message}x=1"])
    except ValueError as e:
      assert "\n" not in str(e)


@pytest.mark.parametrize("override, match", [
    ("estimator.name=pse", r"estimator.name 'pse'.*'pes'"),
    ("estimator.name=mix", "mix_weights"),
    ("estimator.num_tasks=0", r"estimator.num_tasks must be >= 1"),
    ("estimator.sigma=0.0", r"estimator.sigma must be finite and > 0"),
    ("outer.lr=-1e-3", r"outer.lr must be finite and > 0"),
    ("outer.clip_value=1e999", r"outer.clip_value must be finite"),
    ("schedule.horizon=10", r"schedule.horizon \(10\) must be >= schedule.truncation_length"),
    ("eval.tasks=0", r"eval.tasks must be >= 1"),
    ("run.wandb_mode=onlin", r"run.wandb_mode 'onlin'"),
    ("family=mlp_digits_w32_family", r"Unknown task family.*Did you mean"),
    ("lopt=mpl", r"Unknown learned-optimizer architecture.*Did you mean mlp"),
])
def test_invalid_values_rejected_at_load(override, match):
  path = os.path.join(ROOT, "configs", "mlp_digits.py")
  with pytest.raises(ValueError, match=match):
    C.load_config(path, [override])


def test_sections_validate_on_their_own():
  with pytest.raises(ValueError, match="estimator.sigma"):
    C.EstimatorConfig(sigma=float("nan"))
  with pytest.raises(ValueError, match="schedule.min_horizon"):
    C.ScheduleConfig(horizon=100, min_horizon=200)


def test_fingerprint_ignores_bookkeeping_only():
  a = C.MetaTrainConfig()
  assert a.fingerprint() == C.from_dict({"outer.num_steps": 5, "run.run_dir": "x",
                                         "eval.every": 3}).fingerprint()
  assert a.fingerprint() != C.from_dict({"estimator.sigma": 0.02}).fingerprint()
  assert a.fingerprint() != C.from_dict({"eval.horizon": 50}).fingerprint()


def test_small_leaf_multiplier_speeds_up_only_small_leaves_and_keeps_old_fingerprints():
  """A log step size (a scalar of θ) moves `small_leaf_lr_multiplier` times faster than
  network weights under the outer Adam; left at 1 it does not change the fingerprint of
  runs written before the field existed."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from metaopt.meta.trainer import make_outer_optimizer  # pylint: disable=import-outside-toplevel
  theta = {"log_lr0": jnp.float32(-6.9), "scales": jnp.zeros(3), "w": jnp.zeros((8, 8))}
  grads = {k: jnp.ones_like(v) for k, v in theta.items()}
  moves = {}
  for mult in (1.0, 10.0):
    cfg = C.from_dict({"outer.small_leaf_lr_multiplier": mult, "outer.grad_clip": "none"})
    opt = make_outer_optimizer(cfg)
    updates, _ = opt.update(grads, opt.init(theta), theta)
    moves[mult] = {k: float(jnp.abs(u).max()) for k, u in updates.items()}
  assert moves[10.0]["w"] == pytest.approx(moves[1.0]["w"])
  for small in ("log_lr0", "scales"):
    assert moves[10.0][small] == pytest.approx(10 * moves[1.0][small])
  assert C.MetaTrainConfig().fingerprint() == C.from_dict(
      {"outer.small_leaf_lr_multiplier": 1.0}).fingerprint()
  assert C.MetaTrainConfig().fingerprint() != C.from_dict(
      {"outer.small_leaf_lr_multiplier": 10.0}).fingerprint()
  with pytest.raises(ValueError, match="small_leaf_lr_multiplier"):
    C.OuterConfig(small_leaf_lr_multiplier=0.0)


def test_to_dict_round_trips_through_json():
  cfg = C.load_config(os.path.join(ROOT, "configs", "mlp_digits.py:pod"),
                      ["lopt_config.hidden_sizes=(8, 8)"])
  again = C.from_dict(json.loads(json.dumps(cfg.to_dict())))
  assert again == cfg and again.fingerprint() == cfg.fingerprint()


def test_reads_the_flat_config_of_the_shipped_weights():
  flat = _shipped_metadata()["config"]
  assert "outer_lr" in flat  # written before the sections
  cfg = C.from_dict(flat)
  assert cfg.outer.lr == flat["outer_lr"] and cfg.estimator.num_tasks == flat["num_tasks"]
  assert cfg.run.name == flat["name"] and cfg.schedule.horizon == flat["horizon"]
  assert flatten_to_legacy(cfg.to_dict()).items() >= {
      k: v for k, v in flat.items() if k != "lopt_config"}.items()


def _shipped_metadata():
  import struct  # pylint: disable=import-outside-toplevel
  path = os.path.join(ROOT, "metaopt", "pretrained", "mlp-digits-v1.safetensors")
  with open(path, "rb") as f:
    size = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(size))
  return json.loads(header["__metadata__"]["metaopt"])["metadata"]


def test_presets_are_shared_and_variants_checked():
  cpu = presets.experiment("x", "cpu", {"family": "quadratic_family", "lopt": "lstm"})
  assert cpu.run.name == "x_cpu" and cpu.run.run_dir == "runs/x_cpu"
  assert cpu.eval.horizon == cpu.schedule.horizon == presets.CPU["schedule.horizon"]
  pod = presets.experiment("x", "pod", {"family": "quadratic_family", "lopt": "lstm"},
                           changes={"pod": {"schedule.horizon": 1000}})
  assert pod.eval.horizon == 1000 and pod.estimator.num_tasks == presets.POD["estimator.num_tasks"]
  with pytest.raises(ValueError, match=r"variant 'demo'.*\['cpu', 'pod'\]"):
    presets.experiment("x", "demo", {"family": "quadratic_family", "lopt": "lstm"})


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_files_load_in_both_variants(path):
  for variant in ("cpu", "pod"):
    cfg = C.load_config(f"{path}:{variant}")
    assert isinstance(cfg, C.MetaTrainConfig)
    lopt_lib.build(cfg.lopt, cfg.lopt_config)  # the architecture and its config exist
  with pytest.raises(ValueError, match="variant"):
    C.load_config(f"{path}:nope")


def test_every_architecture_has_an_experiment():
  archs = {C.load_config(p).lopt for p in CONFIG_FILES}
  missing = set(lopt_lib.arch_names()) - archs
  assert not missing, f"no configs/*.py meta-trains {sorted(missing)}"


def test_missing_file_and_wrong_return_type(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    C.load_config("configs/nope.py")
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(variant=None):\n  return 3\n")
  with pytest.raises(ValueError, match="expected MetaTrainConfig"):
    C.load_config(str(bad))


def test_typed_config_handles_optional_and_nested_dataclasses():
  import dataclasses  # pylint: disable=import-outside-toplevel
  from typing import Optional, Tuple  # pylint: disable=import-outside-toplevel

  @dataclasses.dataclass(frozen=True)
  class Inner:
    width: Optional[int] = None
    sizes: Tuple[int, ...] = ()

  @dataclasses.dataclass(frozen=True)
  class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    flag: bool = False

  cfg = typed_config.apply_overrides(Outer(), ["inner.width=3", "flag=True", "inner.sizes=[1]"])
  assert cfg == Outer(Inner(3, (1,)), True)
  assert typed_config.apply_overrides(cfg, ["inner.width=None"]).inner.width is None
  with pytest.raises(ValueError, match=r"'inner.width' expects int or None"):
    typed_config.apply_overrides(cfg, ["inner.width=1.5"])
  with pytest.raises(ValueError, match=r"'flag' expects bool"):
    typed_config.apply_overrides(cfg, ["flag=1"])


def test_cli_reports_config_errors_and_prints_config(capsys):
  from metaopt import cli  # pylint: disable=import-outside-toplevel
  path = os.path.join(ROOT, "configs", "mlp_digits.py")
  assert cli.main(["meta-train", path, "--set", "estimator.num_task=3"]) == 2
  err = capsys.readouterr().err
  assert "estimator.num_tasks" in err and len(err.strip().splitlines()) == 1
  assert cli.main(["meta-train", path, "--set", "estimator.sigma=-1", "--print-config"]) == 2
  assert "estimator.sigma must be finite and > 0" in capsys.readouterr().err
  assert cli.main(["meta-train", f"{path}:pod", "--set", "seed=3", "--print-config"]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["seed"] == 3 and printed["estimator"]["num_tasks"] == 256


def test_outer_warmup_longer_than_the_run_is_shortened():
  """A smoke run (2 outer steps) of a preset with 50 warm-up steps: the warm-up takes
  half of the run instead of raising; longer runs keep their schedule."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from metaopt.meta import trainer  # pylint: disable=import-outside-toplevel
  for steps in (1, 2, 200):
    cfg = C.from_dict({"family": "quadratic_family", "lopt": "adam",
                                "outer.num_steps": steps, "outer.warmup_steps": 50,
                                "outer.lr_schedule": "warmup_cosine"})
    opt = trainer.make_outer_optimizer(cfg)
    params = {"x": jnp.ones(3)}
    state = opt.init(params)
    updates, _ = opt.update({"x": jnp.ones(3)}, state, params)
    assert bool(jnp.all(jnp.isfinite(updates["x"])))
