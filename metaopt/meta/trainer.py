"""The outer loop: meta-trains theta with an optax optimizer over a device mesh.

One outer step (gradient estimate(s), clipping, NaN guard, optimizer update, metric
window) is ONE jitted function with the state donated. The in-flight tasks (every
leaf of the estimator's worker state has the task axis first) are sharded over the
``tasks`` axis of a ``jax.sharding.Mesh`` of all devices (of all hosts, after
``jax.distributed.initialize()``); theta and the outer optimizer state are
replicated, and GSPMD inserts the cross-device mean over tasks. The same code runs on
one CPU, all devices of a machine, and many hosts.

Determinism and exact resume: the randomness of outer step ``s`` is
``fold_in(key, s)`` and everything else lives in ``MetaState`` (theta, outer
optimizer state, worker state, step, key, the metric window), which is checkpointed
atomically every ``checkpoint_every`` steps, at the end, and on SIGINT/SIGTERM.
Restarting the same command restores it and truncates ``metrics.jsonl`` to the
checkpoint, so the resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import signal
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

import metaopt
import tasks as task_registry
from metaopt import checkpoint, inner, runlock
from metaopt import lopt as lopt_lib
from metaopt.lopt import io
from metaopt.runlog import (MetricsLogger, check_run_dir, plot_curves, read_metrics,
                            truncate_metrics)
from metaopt.meta import estimators as est_lib
from metaopt.meta import config as config_lib
from metaopt.meta.config import SMALL_LEAF_SIZE, MetaTrainConfig
from tasks.base import TaskFamily
from tasks import sealed
from metaopt.meta.unroll import InnerProblem, shared_data, train_curve

#: Metrics that are counts (summed over gradient-accumulation micro-steps).
COUNT_METRICS = ("num_nan_resets", "num_restarts", "inner_steps")
#: Row keys that measure time; they differ between otherwise identical runs.
TIMING_KEYS = ("inner_steps_per_sec", "elapsed_s")
AXIS = "tasks"
#: OS errors of a run directory that cannot be written (reported as ``RunDirError``).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


@dataclasses.dataclass
class MetaState:
  """Everything a resumed run needs.

  Attributes:
    theta: meta-parameters.
    opt_state: outer optimizer state.
    worker_state: the estimator's in-flight tasks (task axis first; sharded).
    step: int32 outer steps done.
    key: the run's base PRNG key (step ``s`` uses ``fold_in(key, s)``).
    window: metric sums since the last logged step (so logs survive resume exactly).
    num_skipped: float32 count of outer updates skipped for a non-finite meta-gradient
      (which includes a truncation where no inner run stayed finite).
    skip_streak: float32 number of consecutive skipped updates up to this step.
  """
  theta: Any
  opt_state: Any
  worker_state: Any
  step: jax.Array
  key: jax.Array
  window: Dict[str, jax.Array]
  num_skipped: jax.Array
  skip_streak: jax.Array


jax.tree_util.register_dataclass(
    MetaState, data_fields=["theta", "opt_state", "worker_state", "step", "key", "window",
                            "num_skipped", "skip_streak"], meta_fields=[])


class MetaTrainingDiverged(RuntimeError):
  """Every outer update of a long stretch was skipped: nothing is being learned."""


class RunDirError(RuntimeError):
  """The run directory could not be written (disk full, permissions, removed)."""


@dataclasses.dataclass
class MetaTrainResult:
  """Outcome of ``MetaTrainer.run``.

  Attributes:
    theta: final meta-parameters (host numpy).
    rows: the rows of ``metrics.jsonl``.
    step: outer steps done.
    interrupted: True when stopped by SIGINT/SIGTERM (a checkpoint was written).
    export_path: the exported theta file (None when interrupted).
  """
  theta: Any
  rows: List[Dict[str, Any]]
  step: int
  interrupted: bool
  export_path: Optional[str]


def small_leaf_labels(theta) -> Any:
  """``"small"`` for the θ leaves with at most ``SMALL_LEAF_SIZE`` entries, else
  ``"large"`` (``outer.small_leaf_lr_multiplier``)."""
  return jax.tree_util.tree_map(
      lambda x: "small" if np.size(x) <= SMALL_LEAF_SIZE else "large", theta)


def make_outer_optimizer(config: MetaTrainConfig) -> optax.GradientTransformation:
  """Clipping followed by the outer optimizer with its learning-rate schedule (the
  small θ leaves at ``small_leaf_lr_multiplier`` x the rate, by ``optax.partition``:
  the numbers of scaling their updates by hand up to the last bit; at multiplier 1, the
  default of every shipped config, no partition at all).

  Non-finite meta-gradients are skipped by the outer step, not here: wrapping this in
  ``optax.apply_if_finite`` puts the update under a ``lax.cond``, whose different XLA
  fusion changes θ in the last bits (checked with multiplier 1 on Adam and AdamW), so
  runs of the shipped configs would no longer reproduce earlier ones."""
  if config.outer.lr_schedule == "constant":
    lr = config.outer.lr
  elif config.outer.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.outer.lr, config.outer.num_steps)
  else:
    warmup, steps = max(config.outer.warmup_steps, 1), config.outer.num_steps
    if warmup >= steps:  # A short (smoke) run: warm up over half of it instead.
      warmup = max(1, steps // 2)
    lr = optax.warmup_cosine_decay_schedule(0.0, config.outer.lr, warmup, max(steps, warmup + 1))
  make = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd}[config.outer.optimizer]
  opt = make(lr)
  mult = config.outer.small_leaf_lr_multiplier
  if mult != 1.0:
    opt = optax.partition({"small": optax.chain(make(lr), optax.scale(mult)), "large": opt},
                          small_leaf_labels)
  if config.outer.grad_clip == "value":
    opt = optax.chain(optax.clip(config.outer.clip_value), opt)
  elif config.outer.grad_clip == "global_norm":
    opt = optax.chain(optax.clip_by_global_norm(config.outer.clip_value), opt)
  return opt


def make_estimator(config: MetaTrainConfig, problem: InnerProblem) -> est_lib.GradientEstimator:
  """The configured estimator on one problem (one member family)."""
  def one(name):
    est = config.estimator
    return est_lib.build_estimator(name, problem, est.num_tasks, est.sigma, est.full_es_loss)

  if config.estimator.name == "mix":
    names = sorted(config.estimator.mix_weights)
    return est_lib.MixedEstimator([one(n) for n in names],
                                  [config.estimator.mix_weights[n] for n in names])
  return one(config.estimator.name)


def _meta(family) -> dict:
  """A family's ``metadata`` as a dict (empty when it has none)."""
  return dict(getattr(family, "metadata", {}) or {})


@dataclasses.dataclass(frozen=True)
class Member:
  """One family of a run (a run meta-trains on one family or a mixture ``a,b``).

  Attributes:
    name: the family's registry name.  family: the ``TaskFamily``.
    static: its static config (sampled once per run).  data: its shared data.
    problem: the ``InnerProblem`` the estimator unrolls.
  """
  name: str
  family: Any
  static: Any
  data: Any
  problem: InnerProblem


def default_mesh() -> Mesh:
  """A 1-D mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def check_task_split(num_tasks: int, num_devices: int) -> None:
  """The task axis is split evenly over the devices."""
  if num_tasks % num_devices:
    raise ValueError(
        f"num_tasks={num_tasks} must be divisible by the number of devices "
        f"({num_devices}); set num_tasks to a multiple of {num_devices}.")


def _run_dir_error(e: OSError, run_dir: str) -> Exception:
  """A ``RunDirError`` (one line, resume stays possible) for an OS error of a run
  directory that cannot be written (``WRITE_ERRNOS``); any other error as it is."""
  if e.errno not in WRITE_ERRNOS:
    return e
  return RunDirError(
      f"could not write to the run directory {run_dir} ({e}); the run stopped. "
      f"Checkpoints written before are intact: fix the cause (free disk space, "
      f"permissions) and re-run the same command to resume.")


def _agree_or_raise(refused: Optional[Exception], others_message: str) -> None:
  """Raises ``refused`` (the lead's error) on the lead and a ``RunLockError`` saying
  so on every other process of a multi-host job, so that none waits in a collective
  for a lead that stopped."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None)))
    if failed and refused is None:
      raise runlock.RunLockError(others_message)
  if refused is not None:
    raise refused


def _data_signature(data) -> str:
  """A short hash of the shapes, dtypes and checksums of a family's shared data."""
  leaves = jax.tree_util.tree_leaves(data)
  described = [[list(np.shape(x)), str(np.asarray(x).dtype) if not hasattr(x, "dtype")
                else str(x.dtype)] for x in leaves]
  text = json.dumps([described, checkpoint.checksum_list(data)])
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _to_host(tree):
  """Numpy copy of a (possibly multi-host) pytree. Replicated arrays are read from a
  local copy; sharded ones are gathered (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  def get(x):
    if isinstance(x, jax.Array) and x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree_util.tree_map(get, tree)


class MetaTrainer:
  """Builds everything a run needs from a ``MetaTrainConfig``.

  Args:
    config: the run's config.
    family / lopt: objects to use instead of the registry names in ``config``
      (tests and notebooks; the names still go into checkpoints and exports).
    mesh: device mesh (default: all devices, one ``tasks`` axis).
  """

  def __init__(self, config: MetaTrainConfig, family=None, lopt=None, mesh: Optional[Mesh] = None):
    self.config = config
    self.lopt = lopt if lopt is not None else lopt_lib.build(config.lopt, config.lopt_config)
    key = jax.random.PRNGKey(config.seed)
    k_static, k_data, self._k_theta, self._k_worker, self._k_loop, self._k_eval = (
        jax.random.split(key, 6))
    names = config.families
    if family is not None and len(names) > 1:
      raise ValueError("MetaTrainer(family=...) replaces a single family; the config names "
                       f"the mixture {config.family_label!r}.")
    if family is None and isinstance(config.family, TaskFamily):
      family = config.family
    self.members = []
    for i, name in enumerate(names):
      fam = family if family is not None else task_registry.get_family(name)
      # A single family keeps the keys of the one-family trainer (same numbers).
      ks, kd = (k_static, k_data) if len(names) == 1 else (
          jax.random.fold_in(k_static, i), jax.random.fold_in(k_data, i))
      static = fam.sample_static(ks)
      problem = InnerProblem(fam, static, self.lopt, config.schedule, config.estimator.meta_loss)
      self.members.append(Member(name, fam, static, shared_data(fam, static, kd), problem))
    # Held-out data is what the leaderboard judges on: refuse it unless forced.
    self.sealed_used = sealed.check_meta_training(
        {m.name: (_meta(m.family).get("dataset"), _meta(m.family).get("architecture"))
         for m in self.members}, allow_sealed=config.run.allow_sealed)
    if len(self.members) == 1:
      self.estimator = make_estimator(config, self.members[0].problem)
      self.data = self.members[0].data
    else:
      self.estimator = est_lib.MixedEstimator(
          [make_estimator(config, m.problem) for m in self.members], [1.0] * len(self.members),
          split_data=True, labels=names)
      self.data = tuple(m.data for m in self.members)
    self.outer = make_outer_optimizer(config)
    self.mesh = mesh if mesh is not None else default_mesh()
    check_task_split(config.estimator.num_tasks, self.mesh.size)
    self._replicated = NamedSharding(self.mesh, P())
    self._sharded = NamedSharding(self.mesh, P(AXIS))
    abstract = jax.eval_shape(self._init_state)
    self.state_sharding = self._shardings(abstract)
    self.init_state = jax.jit(self._init_state, out_shardings=self.state_sharding)
    data_sharding = jax.tree_util.tree_map(lambda _: self._replicated, self.data)
    self.data = jax.device_put(self.data, data_sharding)
    self.step = jax.jit(self._outer_step, in_shardings=(self.state_sharding, data_sharding),
                        out_shardings=(self.state_sharding, self._replicated),
                        donate_argnums=0)
    self._eval_fn = jax.jit(self._eval_curves, out_shardings=self._replicated)
    self._adam_eval = None
    self._record = None
    #: Setup changes accepted on resume (``run.accept_changes``), every session's.
    self._setup_changes: List[Dict[str, Any]] = []

  # -- state ------------------------------------------------------------------------

  def _shardings(self, state: MetaState) -> MetaState:
    rep = lambda tree: jax.tree_util.tree_map(lambda _: self._replicated, tree)  # noqa: E731
    worker = jax.tree_util.tree_map(lambda _: self._sharded, state.worker_state)
    return MetaState(rep(state.theta), rep(state.opt_state), worker, self._replicated,
                     self._replicated, rep(state.window), self._replicated, self._replicated)

  def _metric_names(self, theta, worker):
    _, _, metrics = jax.eval_shape(self.estimator.compute_gradient, theta, worker, self.data,
                                   self._k_loop)
    return sorted(metrics) + ["grad_norm", "skipped"]

  def _init_state(self) -> MetaState:
    theta = self.lopt.init_meta_params(self._k_theta)
    worker = self.estimator.init_worker_state(theta, self._k_worker)
    window = {k: jnp.zeros((), jnp.float32) for k in self._metric_names(theta, worker)}
    return MetaState(theta, self.outer.init(theta), worker, jnp.zeros((), jnp.int32),
                     self._k_loop, window, jnp.zeros((), jnp.float32),
                     jnp.zeros((), jnp.float32))

  # -- one outer step ---------------------------------------------------------------

  def _outer_step(self, state: MetaState, data):
    cfg = self.config
    key = jax.random.fold_in(state.key, state.step)
    k_resample, k_grad = jax.random.split(key)
    worker = state.worker_state
    if cfg.outer.resample_every:
      worker = jax.lax.cond(
          (state.step > 0) & (state.step % cfg.outer.resample_every == 0),
          lambda: self.estimator.init_worker_state(state.theta, k_resample), lambda: worker)
      worker = jax.lax.with_sharding_constraint(worker, self.state_sharding.worker_state)

    def micro(ws, k):
      g, ws, m = self.estimator.compute_gradient(state.theta, ws, data, k)
      return ws, (g, m)

    worker, (grads, metrics) = jax.lax.scan(micro, worker,
                                            jax.random.split(k_grad, cfg.outer.grad_accum))
    grad = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads)
    metrics = {k: (jnp.sum(v) if k in COUNT_METRICS else jnp.mean(v)) for k, v in metrics.items()}
    # A non-finite meta-gradient is skipped (θ and the optimizer state unchanged).
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g))
                                  for g in jax.tree_util.tree_leaves(grad)]))
    safe_grad = inner.tree_where(finite, grad, jax.tree_util.tree_map(jnp.zeros_like, grad))
    updates, opt_state = self.outer.update(safe_grad, state.opt_state, state.theta)
    theta = inner.tree_where(finite, optax.apply_updates(state.theta, updates), state.theta)
    opt_state = inner.tree_where(finite, opt_state, state.opt_state)
    metrics["grad_norm"] = optax.tree.norm(safe_grad)
    metrics["skipped"] = (~finite).astype(jnp.float32)
    fresh_window = state.step % cfg.run.log_every == 0
    window = {k: jnp.where(fresh_window, 0.0, state.window[k]) + metrics[k].astype(jnp.float32)
              for k in state.window}
    new = MetaState(theta, opt_state, worker, state.step + 1, state.key, window,
                    state.num_skipped + metrics["skipped"],
                    jnp.where(finite, 0.0, state.skip_streak + 1.0))
    return new, metrics["meta_loss"]

  def compile_step(self, state: MetaState) -> Callable[[MetaState, Any], Any]:
    """The outer step compiled ahead of time for ``state``'s shapes and shardings."""
    return self.step.lower(state, self.data).compile()

  # -- evaluation -------------------------------------------------------------------

  def _eval_curves(self, opt_theta, data, adam_lr):
    """Per member family: ``(training losses (eval_tasks, eval_horizon), validation
    losses (eval_tasks,))`` of held-out tasks (fixed key) trained with theta, or with
    Adam at ``adam_lr`` when ``opt_theta`` is None. ``data``: the trainer's data (a
    tuple for a mixture)."""
    datas = (data,) if len(self.members) == 1 else data
    return [self._member_curves(m, opt_theta, d, adam_lr)
            for m, d in zip(self.members, datas)]

  def adam_grid(self) -> List[float]:
    """Adam's learning rates in the held-out evaluation (``eval.adam_lr`` x
    ``10 ** linspace(-1, 1, eval.adam_grid)``)."""
    cfg = self.config.eval
    exps = np.linspace(-1.0, 1.0, cfg.adam_grid) if cfg.adam_grid > 1 else np.zeros(1)
    return [float(cfg.adam_lr * 10.0 ** e) for e in exps]

  def _tuned_adam(self) -> List[tuple]:
    """Per member: ``(training losses, validation losses, learning rate)`` of Adam at
    the grid's rate with the lowest mean validation loss (computed once)."""
    if self._adam_eval is None:
      runs = [(lr, _to_host(self._eval_fn(None, self.data, jnp.float32(lr))))
              for lr in self.adam_grid()]
      self._adam_eval = []
      for i in range(len(self.members)):
        scores = [float(np.nanmean(np.where(np.isfinite(out[i][1]), out[i][1], np.inf)))
                  for _, out in runs]
        k = int(np.argmin(scores))
        self._adam_eval.append((runs[k][1][i][0], runs[k][1][i][1], runs[k][0]))
    return self._adam_eval

  def _member_curves(self, member: Member, opt_theta, data, adam_lr):
    if opt_theta is None:
      opt = optax.adam(adam_lr)
    else:
      def opt(param_info):
        # The held-out run's horizon reaches the rule as it will at evaluation.
        return self.lopt.transform(opt_theta, num_steps=self.config.eval.horizon,
                                   param_info=param_info)
    k_tasks, k_runs = jax.random.split(self._k_eval)
    dyn = jax.vmap(lambda k: member.family.sample_dynamic(k, member.static))(
        jax.random.split(k_tasks, self.config.eval.tasks))
    keys = jax.random.split(k_runs, self.config.eval.tasks)
    run = lambda d, k: train_curve(member.family, member.static, opt, d, data, k,  # noqa: E731
                                   self.config.eval.horizon)
    return jax.vmap(run)(dyn, keys)

  @staticmethod
  def _summary(curves: np.ndarray, prefix: str) -> Dict[str, float]:
    tail = max(1, curves.shape[1] // 10)
    return {f"{prefix}_final_loss": float(np.mean(curves[:, -tail:])),
            f"{prefix}_mean_loss": float(np.mean(curves))}

  def evaluate(self, theta) -> Dict[str, float]:
    """Held-out tasks trained with theta vs Adam tuned over ``adam_grid()`` (by mean
    validation loss), same budget. ``*_valid_loss``: mean validation loss at the end
    (what a user sees); ``eval/lopt_valid_ratio``: theta's over tuned Adam's (a
    mixture: the mean over members; model selection uses it); ``*_final_loss``: mean
    training loss over the last 10% of steps; ``eval/adam_lr``: the rate chosen. A
    mixture reports each member as ``eval/<family>/...`` and, as ``eval/lopt_...`` /
    ``eval/adam_...``, the mean over members of the training losses normalized by the
    member's first-step loss under Adam (families' losses have different scales)."""
    lopt = _to_host(self._eval_fn(theta, self.data, jnp.float32(0.0)))
    adam = self._tuned_adam()
    out, parts, ratios = {}, {"lopt": [], "adam": []}, []
    single = len(self.members) == 1
    for m, (lc, lv), (ac, av, lr) in zip(self.members, lopt, adam):
      prefix = "eval" if single else f"eval/{m.name}"
      scale = 1.0 if single else max(float(np.mean(np.abs(ac[:, 0]))), 1e-12)
      lopt_valid, adam_valid = float(np.mean(lv)), float(np.mean(av))
      out[f"{prefix}/lopt_valid_loss"], out[f"{prefix}/adam_valid_loss"] = lopt_valid, adam_valid
      out[f"{prefix}/adam_lr"] = lr
      ratio = lopt_valid / adam_valid if adam_valid > 0 else float("nan")
      ratios.append(ratio if np.isfinite(ratio) else float("inf"))
      for label, curves in (("lopt", lc), ("adam", ac)):
        if not single:
          out.update(self._summary(curves, f"eval/{m.name}/{label}"))
        parts[label].append(self._summary(curves / scale, label))
    for label, rows in parts.items():
      for k in rows[0]:
        out[f"eval/{k}"] = float(np.mean([r[k] for r in rows]))
    out["eval/lopt_valid_ratio"] = float(np.mean(ratios))
    return out

  # -- checkpoints ------------------------------------------------------------------

  def record(self) -> Dict[str, Any]:
    """What a checkpoint records to be resumed only by the same setup: the resolved
    configuration (``MetaTrainConfig.resolved`` with the built architecture's full
    config) plus each member family's static config and a checksum of its data."""
    if self._record is None:
      record = self.config.resolved(self.lopt.config)
      for m in self.members:
        record[f"data.{m.name}"] = _data_signature(m.data)
        static = repr(m.static)
        if "0x" not in static:  # An object's default repr holds its address.
          record[f"static.{m.name}"] = static[:2000]
      self._record = record
    return self._record

  def _check_checkpoint(self, where: str, meta: Dict[str, Any]) -> None:
    """Refuses (``CheckpointError``) a checkpoint recorded by another setup or package
    version, naming the fields that differ; with ``run.accept_changes`` only warns."""
    saved = meta["metadata"]
    self._setup_changes = list(saved.get("setup_changes", []))
    if "resolved" in saved:
      diffs = config_lib.differences(saved["resolved"], self.record())
    else:
      diffs = {"configuration": ("not recorded (an older metaopt wrote only a hash)",
                                 "recorded")}
    version = saved.get("package_version", "(not recorded)")
    if version != metaopt.__version__:
      diffs["package_version"] = (version, metaopt.__version__)
    if not diffs:
      return
    shown = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(diffs.items())[:8]]
    if len(diffs) > 8:
      shown.append(f"and {len(diffs) - 8} more")
    listing = "; ".join(shown)
    if self.config.run.accept_changes:
      self._setup_changes.append({"step": int(meta["step"]), "changes": {
          k: [old, new] for k, (old, new) in diffs.items()}})
      warnings.warn(f"resuming {where} although it was written by another setup "
                    f"(checkpoint -> this run: {listing}); run.accept_changes=true, so θ "
                    f"mixes the two.", stacklevel=3)
      return
    raise checkpoint.CheckpointError(
        f"Checkpoint {where} was written by another setup (checkpoint -> this run: "
        f"{listing}). Run with the setup that wrote it; or start afresh in a new directory "
        f"(--set run.run_dir=DIR); or continue from it on purpose, mixing the two, with "
        f"--set run.accept_changes=true.")

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.config.run.run_dir, "checkpoints")

  def save(self, state: MetaState, wall_time: float, compile_time: float) -> None:
    """Checkpoints ``state`` (a collective: every process writes its own shards)."""
    record = self.record()
    meta = dict(resolved=record, fingerprint=self.config.fingerprint(self.lopt.config),
                package_version=metaopt.__version__, jax_version=jax.__version__,
                setup_changes=self._setup_changes,
                wall_time_s=wall_time, compile_time_s=compile_time,
                num_devices=jax.device_count())
    checkpoint.save(self.checkpoint_dir, int(_to_host(state.step)), state, meta,
                    keep=self.config.run.keep_checkpoints)

  def restore(self):
    """``(state, wall_time_s, compile_time_s)`` from the newest readable checkpoint
    (arrays placed with the run's shardings), or ``None``."""
    if checkpoint.latest_step(self.checkpoint_dir) is None:
      return None
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(self._init_state), self.state_sharding)
    state, meta = checkpoint.restore(self.checkpoint_dir, abstract,
                                     check=self._check_checkpoint)
    if meta["step"] > self.config.outer.num_steps:
      raise checkpoint.CheckpointError(
          f"The checkpoint in {self.checkpoint_dir} is at outer step {meta['step']}, beyond "
          f"outer.num_steps={self.config.outer.num_steps}: exporting it would label θ "
          f"trained for {meta['step']} steps as {self.config.outer.num_steps}. Set "
          f"outer.num_steps >= {meta['step']} to go on, or train "
          f"{self.config.outer.num_steps} steps afresh in a new run directory "
          f"(--set run.run_dir=DIR).")
    saved = meta["metadata"]
    return state, float(saved.get("wall_time_s", 0.0)), float(saved.get("compile_time_s", 0.0))

  # -- the loop ---------------------------------------------------------------------

  @property
  def lock_path(self) -> str:
    return os.path.join(self.config.run.run_dir, "run.lock")

  def run(self, progress: bool = True) -> MetaTrainResult:
    """Meta-trains to ``config.outer.num_steps`` (resuming from the latest checkpoint),
    holding the run directory's lock (``runlock``, taken by the lead process) for the
    whole job: a second job on the same directory raises ``runlock.RunLockError``
    before touching anything (on every process of a multi-host job)."""
    run_dir = self.config.run.run_dir
    with contextlib.ExitStack() as stack:
      refused = None
      if jax.process_index() == 0:
        try:
          check_run_dir(run_dir)  # A file in the way: one clear ValueError.
          stack.enter_context(runlock.hold(
              self.lock_path, f"run directory {run_dir}",
              "wait for that job to finish (or stop it; re-running then resumes), or give "
              "this run its own directory with --set run.run_dir=DIR."))
        except (ValueError, runlock.RunLockError) as e:
          refused = e
        except OSError as e:  # A full disk already: the lock file cannot be written.
          refused = _run_dir_error(e, run_dir)
      _agree_or_raise(refused, f"the lead process could not take run directory {run_dir} "
                               "(in use by another job, not a directory, or not writable)")
      try:
        return self._run(progress)
      except OSError as e:  # Disk full, permissions: one line, and resume stays possible.
        error = _run_dir_error(e, run_dir)
        if error is e:
          raise
        raise error from e

  def _run(self, progress: bool) -> MetaTrainResult:
    cfg = self.config
    lead = jax.process_index() == 0
    if lead:  # A kill while exporting leaves a temporary file (checkpoints: orbax cleans).
      for stale in io.remove_stale_temporaries(self.export_path):
        warnings.warn(f"removed {stale}, left by an interrupted export", stacklevel=2)
    restored = self.restore()
    state, wall, compile_time = restored if restored else (self.init_state(), 0.0, None)
    start = int(_to_host(state.step))
    bar = None
    if progress and lead:
      bar = tqdm(total=cfg.outer.num_steps, initial=start, desc=cfg.run.name, unit="step")
    _status(bar, "compiling the outer step")
    t_compile = time.perf_counter()
    outer_step = self.compile_step(state)
    # Device time counts the first session's compilation only (a resume recompiles).
    compile_time = time.perf_counter() - t_compile if compile_time is None else compile_time
    _status(bar, f"compiled in {time.perf_counter() - t_compile:.0f} s")
    metrics_path = os.path.join(cfg.run.run_dir, "metrics.jsonl")
    logger = None
    if lead:
      if restored:
        truncate_metrics(metrics_path, start)
      logger = MetricsLogger(cfg.run.run_dir, cfg.to_dict(), project=cfg.run.wandb_project,
                             mode=cfg.run.wandb_mode, name=cfg.run.name, resume=bool(restored))
    stop = _StopFlag()
    step, t_window, steps_window = start, time.perf_counter(), 0
    # The best held-out evaluation so far (eval.keep_best), from the kept metrics rows.
    best = float("inf")
    if restored:
      best = min((r["eval/lopt_valid_ratio"] for r in read_metrics(metrics_path)
                  if "eval/lopt_valid_ratio" in r), default=float("inf"))
    interrupted = False
    try:
      with stop:
        while step < cfg.outer.num_steps:
          t0 = time.perf_counter()
          state, _ = outer_step(state, self.data)
          step += 1
          steps_window += 1
          row = {}
          if step % cfg.run.log_every == 0 or step == cfg.outer.num_steps:
            window = _to_host(state.window)  # Blocks: the only host sync of the loop.
            count = (step - 1) % cfg.run.log_every + 1
            row = {k: float(v) / (1 if k in COUNT_METRICS or k == "skipped" else count)
                   for k, v in window.items()}
            dt = time.perf_counter() - t_window
            per_step = window["inner_steps"] / count
            row["inner_steps_per_sec"] = per_step * steps_window / dt if steps_window else 0.0
            row["num_skipped_total"] = float(_to_host(state.num_skipped))
            t_window, steps_window = time.perf_counter(), 0
            self._check_health(row, int(_to_host(state.skip_streak)), step, bar)
          if cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.outer.num_steps):
            _status(bar, f"evaluating on {cfg.eval.tasks} held-out tasks x {cfg.eval.horizon} "
                         f"steps (θ, and Adam over {cfg.eval.adam_grid} learning rates)")
            row.update(self.evaluate(state.theta))
            t_window, steps_window = time.perf_counter(), 0
            if cfg.eval.keep_best and row["eval/lopt_valid_ratio"] < best:
              best = row["eval/lopt_valid_ratio"]
              self.export(_to_host(state.theta), wall + time.perf_counter() - t0 + compile_time,
                          path=self.best_path, selected_at_step=step)
          wall += time.perf_counter() - t0
          if row:
            row["elapsed_s"] = wall
            if lead:
              logger.log(step, row)
              if bar is not None:
                bar.set_postfix(meta_loss=f"{row.get('meta_loss', float('nan')):.4g}",
                                steps_s=f"{row.get('inner_steps_per_sec', 0):.0f}")
          if bar is not None:
            bar.update(1)
          if step % cfg.run.checkpoint_every == 0 or step == cfg.outer.num_steps or stop.flag:
            self.save(state, wall, compile_time)
            if lead:
              logger.log_images(step, self._plot())
          if stop.flag:
            interrupted = True
            break
    finally:
      if bar is not None:
        bar.close()
      if logger is not None:
        logger.close()
    theta = _to_host(state.theta)
    export_path = None if interrupted else self.export(theta, wall + compile_time)
    rows = read_metrics(metrics_path) if lead else []
    return MetaTrainResult(theta, rows, step, interrupted, export_path)

  def _check_health(self, row: Dict[str, float], skip_streak: int, step: int, bar) -> None:
    """Stops a run that learns nothing; warns when few inner runs stay finite."""
    cfg = self.config
    if skip_streak >= cfg.run.max_skipped_steps:
      raise MetaTrainingDiverged(
          f"meta-training stopped at outer step {step}: the last {skip_streak} outer updates "
          f"were skipped (no inner run stayed finite, or the meta-gradient was not finite); "
          f"nothing was exported. Lower outer.lr or estimator.sigma, or check that the task "
          f"family '{cfg.family_label}' trains with a hand-designed optimizer. The checkpoint of "
          f"step {step - step % cfg.run.checkpoint_every} and metrics.jsonl are in "
          f"{cfg.run.run_dir}.")
    if row.get("valid_fraction", 1.0) < 0.5 and jax.process_index() == 0:
      message = (f"warning: outer step {step}: only {100 * row['valid_fraction']:.0f}% of "
                 f"inner runs stayed finite over the last {cfg.run.log_every} steps")
      if bar is not None:
        bar.write(message)
      else:
        warnings.warn(message, stacklevel=2)

  def _plot(self) -> Dict[str, str]:
    """Writes the curves' PNGs; returns ``{name: path}`` (uploaded to wandb)."""
    rows = read_metrics(os.path.join(self.config.run.run_dir, "metrics.jsonl"))
    out = {"meta_loss_curve": plot_curves(
        rows, ["meta_loss"], os.path.join(self.config.run.run_dir, "meta_loss.png"),
        title=f"{self.config.run.name}: meta-loss")}
    if any("eval/lopt_valid_ratio" in r for r in rows):
      out["eval_loss_curve"] = plot_curves(
          rows, ["eval/lopt_valid_ratio"],
          os.path.join(self.config.run.run_dir, "eval_loss.png"),
          title=f"{self.config.run.name}: held-out validation loss / tuned Adam's")
    return out

  @property
  def export_path(self) -> str:
    return os.path.join(self.config.run.run_dir, f"{self.config.run.name}.safetensors")

  @property
  def best_path(self) -> str:
    return os.path.join(self.config.run.run_dir, f"{self.config.run.name}.best.safetensors")

  def export(self, theta, wall_time: float, path: Optional[str] = None,
             selected_at_step: Optional[int] = None) -> Optional[str]:
    """Writes theta as ``<run_dir>/<name>.safetensors`` (or ``path``; loadable by
    ``metaopt.load``); ``selected_at_step`` records a best-evaluation export."""
    if jax.process_index() != 0:
      return None
    cfg = self.config
    path = path or self.export_path
    extra = {} if selected_at_step is None else {"selected_at_step": selected_at_step}
    if self._setup_changes:  # θ mixes setups (run.accept_changes): say where.
      extra["setup_changes"] = self._setup_changes
    io.save(path, self.lopt, theta, {**extra,
        "trained_on": list(cfg.families),
        "trained_on_datasets": sorted({str(_meta(m.family)["dataset"])
                                       for m in self.members if _meta(m.family).get("dataset")}),
        **({"sealed_data_used": self.sealed_used} if self.sealed_used else {}),
        # Outer steps, held-out evaluations and one compilation, on every device.
        "meta_training_device_hours": wall_time * jax.device_count() / 3600.0,
        "meta_training_steps": cfg.outer.num_steps,
        "estimator": cfg.estimator.name,
        "config": cfg.to_dict(),
    })
    return path


def _status(bar, text: str) -> None:
  """Shows what the job is doing between outer steps (compiling, evaluating) on the
  progress bar; nothing without one."""
  if bar is not None:
    bar.set_postfix_str(text, refresh=True)


class _StopFlag:
  """Context manager turning SIGINT/SIGTERM into a flag checked after each step.

  Multi-host: every process must receive the signal (as cluster schedulers send it),
  since the checkpoint that follows is a collective."""

  def __init__(self):
    self.flag = False
    self._old = {}

  def _handle(self, signum, frame):
    del signum, frame
    self.flag = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def meta_train(config: MetaTrainConfig, progress: bool = True, **kwargs) -> MetaTrainResult:
  """Runs (or resumes) the meta-training described by ``config``."""
  return MetaTrainer(config, **kwargs).run(progress=progress)
