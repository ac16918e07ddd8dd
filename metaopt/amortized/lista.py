"""Unrolled sparse coding: LISTA, LISTA-CP, LISTA-CPSS and ALISTA.

For ``y = A x + w`` with a fixed dictionary ``A`` (``m x n``), a ``K``-layer network
maps ``y`` to estimates ``x_1 .. x_K`` (``x_0 = 0``), each layer a learned ISTA step
followed by a shrinkage ``eta``:

* ``lista`` (Gregor & LeCun 2010, untied): ``x_{k+1} = eta(W1_k y + W2_k x_k, t_k)``,
  ``W1_k`` (n x m), ``W2_k`` (n x n), initialized at ISTA: ``A'/L``, ``I - A'A/L``.
* ``lista_cp`` (Chen et al. 2018, coupled weights): ``x_{k+1} = eta(x_k + g_k W_k'(y - A
  x_k), t_k)`` with ``W_k`` (m x n), initialized at ``A/L``, and ``g_k`` a scalar
  (initialized at 1) that only reparameterizes the coupled weight ``g_k W_k`` (same model
  class as the paper's) so that the step length can move faster than the matrix
  entries (``weight_lr_scale``).
* ``lista_cpss`` (Chen et al. 2018): ``lista_cp`` with support selection.
* ``alista`` (Liu et al. 2019): ``x_{k+1} = eta(x_k - g_k W'(A x_k - y), t_k)`` with the
  *analytic* weight ``W`` computed once from ``A`` (``alista_weight``), only the ``2K``
  scalars ``g_k`` (step, initialized at 1 as in the paper's code) and ``t_k`` (threshold)
  learned, and support selection.
* ``alista_per_instance`` (this library; in the spirit of NA-ALISTA, Behrens et al. 2021,
  and HyperLISTA, Chen et al. 2021): ALISTA whose step and threshold are predicted per
  instance and layer from the current iterate. With ``r_k = A x_k - y``,
  ``g_k = W' r_k``, ``s = ||W'y||_1 / n`` (the instance's scale) and four scale-free
  statistics ``f_k``: ``log(||r_k|| / ||y||)``, ``log(||g_k||_1 / ||W'y||_1)``,
  ``log(||x_k||_1 / ||W'y||_1 + 1e-6)`` and the fraction of non-zero entries of ``x_k``,

      h_k = L_k f_k + V_k tanh(U_k f_k + b_k) + c_k              (2 outputs)
      x_{k+1} = eta(x_k - gamma_k exp(h_k1) g_k,  theta_k s exp(h_k2)),

  with learned per-layer scalars ``gamma_k``, ``theta_k``, a linear map ``L_k`` and a
  16-unit MLP (``L_k``, ``V_k``, ``c_k`` zero at init: every layer starts as an ALISTA
  step). The linear part extrapolates beyond the statistics seen in training; the
  threshold is proportional to the instance's scale, so the network is scale
  equivariant (``y -> c y`` gives ``x_k -> c x_k``).

``eta`` is the soft threshold ``sign(v) max(|v| - t, 0)``, or with *support selection*
(``support_select``): in layer ``k`` (1-based) the ``round(p_k n)`` entries of largest
magnitude (``p_k = min(p_max, k p_step)``) that also exceed ``t_k`` pass unshrunk, the
others are soft-thresholded. Any variant can switch it on (``LISTAConfig.support_selection``).

Training is supervised on the ground-truth code (the standard LISTA objective), on fresh
instances each step, in one of two ways (``LISTAConfig.training``):

* ``"end_to_end"``: all layers at once, loss averaged over all layers (``loss_layers="all"``)
  or the output only, Adam with cosine decay over ``steps``.
* ``"stagewise"`` (the papers' schedule): for layer ``t = 1..K``, a stage training layer ``t``
  alone at ``lr``, then stages training layers ``1..t`` at ``lr * d`` for each further
  ``d`` in ``stage_lr_decays`` (default 0.2, 0.02); the loss is the NMSE of layer ``t``;
  each stage runs at most ``stage_steps`` steps and stops early after ``patience``
  validations without improvement, keeping its best parameters. A new layer starts at
  its init, as a copy of the trained layer before it, or as the better of that copy and
  an identity layer (``stage_init``).

Evaluation reports NMSE (dB) per layer on held-out instances from a disjoint key stream.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.amortized.solvers import nmse_db, soft_threshold
from tasks.problems import Problem

VARIANTS = ("lista", "lista_cp", "lista_cpss", "alista", "alista_per_instance")
TRAINING = ("end_to_end", "stagewise")
STAGE_INIT = ("fresh", "previous", "monotone")
# End-to-end training's peak learning rate per variant (``training="end_to_end"``).
DEFAULT_LR = {"lista": 3e-3, "lista_cp": 3e-3, "lista_cpss": 3e-3, "alista": 1e-2,
              "alista_per_instance": 1e-2}
_SS_BY_DEFAULT = ("lista_cpss", "alista", "alista_per_instance")
_CP_RECIPE = dict(training="stagewise", learning_rate=1e-3, stage_steps=80, val_every=40,
                  init="analytic", weight_lr_scale=0.02, stage_init="previous",
                  log_thresholds=False)
_ALISTA_RECIPE = dict(training="stagewise", learning_rate=1e-2, stage_steps=150,
                      val_every=50, init="ista", weight_lr_scale=1.0, stage_init="previous",
                      log_thresholds=True)
#: The documented recipe of each variant (docs/amortized.md, ``benchmarks/lista_table.py``):
#: what a ``LISTAConfig`` field left at ``None`` takes. Stage-wise training (the papers'
#: schedule) with each new layer a copy of the one before; LISTA and LISTA-CP(SS) start
#: from ALISTA's analytic weight with a smaller rate on their matrices.
RECIPES = {
    "lista": dict(training="stagewise", learning_rate=1e-3, stage_steps=150, val_every=30,
                  init="analytic", weight_lr_scale=0.1, stage_init="previous",
                  log_thresholds=False),
    "lista_cp": _CP_RECIPE,
    "lista_cpss": _CP_RECIPE,
    "alista": _ALISTA_RECIPE,
    "alista_per_instance": _ALISTA_RECIPE,
}
_RECIPE_FIELDS = tuple(RECIPES["lista"])
_FEATURES, _HIDDEN = 4, 16  # alista_per_instance's statistics and MLP width.


def alista_weight(a: jax.Array) -> jax.Array:
  """ALISTA's analytic weight: ``W = argmin ||W'A||_F^2  s.t.  W_i' A_i = 1 for all i``.

  This is the Frobenius-norm convex problem of ALISTA (Liu et al. 2019, eq. 18-19),
  solved in *closed form*: it separates over columns into ``min_w w'Gw`` s.t.
  ``w'a_i = 1`` with ``G = A A'``, whose solution is ``w_i = G^{-1} a_i /
  (a_i' G^{-1} a_i)`` (``G`` is invertible when ``A`` has full row rank, ``m <= n``).
  Returns ``W`` of shape ``(m, n)`` like ``A``.
  """
  a = jnp.asarray(a, jnp.float32)
  m, n = a.shape
  if m > n:
    raise ValueError(f"alista_weight needs a wide dictionary (m <= n), got {a.shape}.")
  ginv_a = jnp.linalg.solve(a @ a.T, a)
  return ginv_a / jnp.sum(a * ginv_a, axis=0, keepdims=True)


def support_counts(num_layers: int, n: int, p_step: float, p_max: float) -> np.ndarray:
  """Entries passed unshrunk per layer: ``round(min(p_max, k p_step) n)``, ``k = 1..K``."""
  frac = np.minimum(p_max, p_step * np.arange(1, num_layers + 1))
  return np.round(frac * n).astype(np.int32)


def support_select(v: jax.Array, theta, count) -> jax.Array:
  """Soft threshold with support selection over the last axis of ``v`` (``(..., n)``).

  The ``count`` entries of largest ``|v|`` (ties included) that also exceed ``theta``
  are kept as they are (no shrinkage bias on the likely support); the rest are
  soft-thresholded by ``theta``. ``count`` may be traced; ``count = 0`` is plain soft
  thresholding. The selection carries no gradient (as in LISTA-CPSS).
  """
  mag = jnp.abs(v)
  n = v.shape[-1]
  ranked = jnp.sort(mag, axis=-1)
  kth = jnp.take(ranked, jnp.clip(n - count, 0, n - 1), axis=-1)[..., None]
  keep = (count > 0) & (mag >= kth) & (mag > theta)
  keep = jax.lax.stop_gradient(keep)
  return jnp.where(keep, v, soft_threshold(v, theta))


@dataclasses.dataclass(frozen=True)
class LISTAConfig:
  """Architecture and training settings.

  Attributes:
    variant: one of ``VARIANTS``.
    num_layers: ``K``.
    steps: Adam steps of end-to-end training (fresh batch of instances each step).
    batch_size: instances per step.
    learning_rate: peak Adam learning rate; ``None``: the recipe's (stage-wise) or
      ``DEFAULT_LR[variant]`` (end-to-end, cosine decay to 1% over ``steps``).
    loss_layers: end-to-end only: ``"all"`` averages the error of every layer,
      ``"last"`` uses the output layer only.
    seed: seeds training instances.
    support_selection: ``None`` = the variant's default (on for ``lista_cpss`` and
      ``alista``, off otherwise); ``True``/``False`` forces it.
    ss_p_step, ss_p_max: support selection passes ``min(p_max, k p_step)`` of the ``n``
      entries in layer ``k`` (Chen et al. 2018: 1.2% and 13% for sparsity 10%).
    training: ``"end_to_end"`` or ``"stagewise"`` (see the module docstring).
    stage_lr_decays: stage-wise learning-rate multipliers per layer; the first stage
      trains the new layer alone, the others all layers so far.
    stage_steps: maximum steps per stage.
    patience: validations without improvement that end a stage (0: never early).
    val_every: steps between validations (stage-wise).
    val_size: validation instances (from the ``outer_valid`` key stream).
    init: ``"ista"`` (weights at ISTA: ``A'/L`` ...) or, for ``lista``, ``lista_cp``,
      ``lista_cpss``, ``"analytic"``: every layer at ALISTA's first step with the
      analytic weight ``W`` and unit step (``W_k = W``; untied: ``W1_k = W'``,
      ``W2_k = I - W'A``), so training starts where ALISTA starts and learns the full
      matrices from there (much faster on a CPU budget than from ISTA's ``1/L`` step).
    weight_lr_scale: learning-rate multiplier of the weight matrices (``W``, ``W1``,
      ``W2``) relative to steps and thresholds. Adam moves every entry by about the
      learning rate per step, so a rate right for a threshold (~1e-2) scrambles a
      matrix whose entries are ~0.1 within a few dozen steps; ~0.02 keeps them apart.
    stage_init: stage-wise only: ``"fresh"`` starts layer ``t``'s first stage from its
      ``init`` values; ``"previous"`` copies the trained layer ``t - 1`` into layer ``t``
      first (its thresholds have already shrunk and its matrices adapted, so the new
      layer starts as one more step of the layer before); ``"monotone"`` does the same
      unless that copy validates worse than an *identity* layer (``x_t = x_{t-1}``:
      zero step and threshold, ``identity_layer``), which then is the start. As every
      stage keeps its best validation point, validation NMSE then never grows with
      depth (noisy problems, where extra layers start fitting noise). Both are ignored
      when fine-tuning from ``initial_params``, whose layers are all trained already.
    log_thresholds: train the thresholds ``t_k`` through ``log t_k``: Adam's update
      ``u`` of ``log t_k`` (gradient ``t_k dL/dt_k``) applies as ``t_k <- t_k exp(u)``,
      the stored parameters stay ``t_k``. A threshold then moves by a fraction of itself
      per step: deep layers' thresholds shrink to ~1e-3 of the first layer's, where an
      additive step sized for the first layer is larger than the threshold itself.

  The fields ``training``, ``learning_rate``, ``stage_steps``, ``val_every``, ``init``,
  ``weight_lr_scale``, ``stage_init`` and ``log_thresholds`` default to ``None``: the
  variant's documented recipe (``RECIPES``), filled in by ``resolved()`` when training
  starts (so a config whose ``variant`` is replaced later takes the new variant's
  recipe). Set one to depart from the recipe.
  """
  variant: str = "lista"
  num_layers: int = 16
  steps: int = 2000
  batch_size: int = 64
  learning_rate: Optional[float] = None
  loss_layers: str = "all"
  seed: int = 0
  support_selection: Optional[bool] = None
  ss_p_step: float = 0.012
  ss_p_max: float = 0.13
  training: Optional[str] = None
  stage_lr_decays: Tuple[float, ...] = (1.0, 0.2, 0.02)
  stage_steps: Optional[int] = None
  patience: int = 4
  val_every: Optional[int] = None
  val_size: int = 1000
  init: Optional[str] = None
  weight_lr_scale: Optional[float] = None
  stage_init: Optional[str] = None
  log_thresholds: Optional[bool] = None

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"Unknown LISTA variant {self.variant!r}; known: {VARIANTS}.")
    if self.loss_layers not in ("all", "last"):
      raise ValueError(f"loss_layers must be 'all' or 'last', got {self.loss_layers!r}.")
    if self.init not in (None, "ista", "analytic") or (
        self.init == "analytic" and self.variant.startswith("alista")):
      raise ValueError(f"init must be 'ista' or 'analytic' (not for alista); got "
                       f"init={self.init!r} with variant {self.variant!r}.")
    if self.weight_lr_scale is not None and self.weight_lr_scale <= 0:
      raise ValueError(f"weight_lr_scale must be > 0, got {self.weight_lr_scale}.")
    if self.stage_init not in (None,) + STAGE_INIT:
      raise ValueError(f"stage_init must be one of {STAGE_INIT}, got "
                       f"{self.stage_init!r}.")
    if self.training not in (None,) + TRAINING:
      raise ValueError(f"training must be one of {TRAINING}, got {self.training!r}.")
    if self.num_layers < 1 or self.steps < 0 or self.batch_size < 1:
      raise ValueError(f"LISTAConfig needs num_layers >= 1, steps >= 0, batch_size >= 1; "
                       f"got {self}.")
    if not (0.0 <= self.ss_p_step <= 1.0 and 0.0 <= self.ss_p_max <= 1.0):
      raise ValueError(f"ss_p_step and ss_p_max are fractions in [0, 1] (0.012 = 1.2%); "
                       f"got {self.ss_p_step}, {self.ss_p_max}.")
    if (not self.stage_lr_decays or (self.stage_steps is not None and self.stage_steps < 1)
        or (self.val_every is not None and self.val_every < 1) or self.val_size < 1
        or self.patience < 0):
      raise ValueError(f"Stage-wise training needs non-empty stage_lr_decays, "
                       f"stage_steps, val_every, val_size >= 1 and patience >= 0; got "
                       f"{self}.")

  def resolved(self) -> "LISTAConfig":
    """This config with every field left at ``None`` set from ``RECIPES[variant]``
    (with ``training="end_to_end"``: ``DEFAULT_LR`` and additive thresholds)."""
    recipe = RECIPES[self.variant]
    fill = {f: recipe[f] for f in _RECIPE_FIELDS if getattr(self, f) is None}
    if fill.get("training", self.training) == "end_to_end":
      # End-to-end training has its own defaults: DEFAULT_LR, additive thresholds.
      for f, v in (("learning_rate", DEFAULT_LR[self.variant]), ("log_thresholds", False)):
        if f in fill:
          fill[f] = v
    return dataclasses.replace(self, **fill) if fill else self

  @property
  def uses_support_selection(self) -> bool:
    if self.support_selection is None:
      return self.variant in _SS_BY_DEFAULT
    return bool(self.support_selection)

  @property
  def lr(self) -> float:
    return self.resolved().learning_rate


def _dictionary(problem: Problem) -> jax.Array:
  if "A" not in (problem.data or {}):
    raise ValueError(f"LISTA needs a problem with a fixed dictionary data['A'] (e.g. "
                     f"tasks.sparse.lasso); {problem.name!r} has none.")
  return problem.data["A"]


def init_params(problem: Problem, variant: str, num_layers: int,
                init: str = "ista") -> Dict[str, jax.Array]:
  """Parameters initialized at ISTA with ``lam = problem.l1`` (every leaf has the layer
  axis first). Without support selection LISTA(-CP) then equals ISTA exactly.
  ``init="analytic"``: layers start at ALISTA's unit step (``LISTAConfig.init``)."""
  a = _dictionary(problem)
  m, n = a.shape
  lip = float(problem.data.get("L", np.linalg.norm(np.asarray(a), 2) ** 2))
  k = num_layers
  theta = jnp.full((k,), problem.l1 / lip, jnp.float32)
  w = alista_weight(a) if init == "analytic" else a / lip
  if variant == "lista":
    return {"W1": jnp.tile(w.T[None], (k, 1, 1)),
            "W2": jnp.tile((jnp.eye(n) - w.T @ a)[None], (k, 1, 1)), "theta": theta}
  if variant in ("lista_cp", "lista_cpss"):
    return {"W": jnp.tile(w[None], (k, 1, 1)), "gamma": jnp.ones((k,), jnp.float32),
            "theta": theta}
  if variant == "alista":
    # diag(W'A) = 1, so the unit step of the paper's code is ISTA's natural scale here.
    return {"gamma": jnp.ones((k,), jnp.float32), "theta": theta}
  if variant == "alista_per_instance":
    # The linear map and the MLP's output layer start at zero: every layer starts as
    # an ALISTA step.
    hidden = jax.random.normal(jax.random.PRNGKey(k), (k, _FEATURES, _HIDDEN)) / 2.0
    # theta multiplies the instance's input scale ||W'y||_1 / n: start where ALISTA's
    # threshold starts for an average instance of the problem.
    insts = problem.sample_batch(jax.random.PRNGKey(0), 256)
    scale = jnp.mean(jnp.sum(jnp.abs(insts["y"] @ alista_weight(a)), axis=-1)) / n
    return {"gamma": jnp.ones((k,), jnp.float32),
            "theta": jnp.full((k,), theta[0] / scale, jnp.float32),
            "lin": jnp.zeros((k, _FEATURES, 2), jnp.float32),
            "mlp_w1": hidden.astype(jnp.float32),
            "mlp_b1": jnp.zeros((k, _HIDDEN), jnp.float32),
            "mlp_w2": jnp.zeros((k, _HIDDEN, 2), jnp.float32),
            "mlp_b2": jnp.zeros((k, 2), jnp.float32)}
  raise ValueError(f"Unknown LISTA variant {variant!r}; known: {VARIANTS}.")


def apply(params: Dict[str, jax.Array], variant: str, a: jax.Array, y: jax.Array,
          w_alista: Optional[jax.Array] = None, ss_counts=None,
          x0: Optional[jax.Array] = None) -> jax.Array:
  """Runs the network on observations ``y`` (``(..., m)``).

  Returns ``(K + 1, ..., n)``: ``x_0 = 0`` then the output of every layer (``K`` is the
  leading size of ``params``' leaves). ``w_alista`` (from ``alista_weight(a)``) is
  required for ``alista``; ``ss_counts`` (``(K,)`` ints, from ``support_counts``)
  switches on support selection, ``None`` is plain soft thresholding. ``x0``
  (``(..., n)``, default zeros) starts the iteration elsewhere, e.g. at the output of
  earlier layers.
  """
  if x0 is None:
    x0 = jnp.zeros(y.shape[:-1] + (a.shape[1],), y.dtype)
  if variant == "lista":
    pre = lambda x, p: (y @ p["W1"].T + x @ p["W2"].T, p["theta"])
  elif variant in ("lista_cp", "lista_cpss"):
    pre = lambda x, p: (x + p.get("gamma", 1.0) * ((y - x @ a.T) @ p["W"]), p["theta"])
  elif variant.startswith("alista"):
    if w_alista is None:
      raise ValueError(f"variant {variant!r} needs w_alista=alista_weight(A).")
    if variant == "alista":
      pre = lambda x, p: (x - p["gamma"] * ((x @ a.T - y) @ w_alista), p["theta"])
    else:
      pre = _per_instance_step(a, y, w_alista)
  else:
    raise ValueError(f"Unknown LISTA variant {variant!r}; known: {VARIANTS}.")
  num_layers = jax.tree_util.tree_leaves(params)[0].shape[0]
  counts = (jnp.zeros((num_layers,), jnp.int32) if ss_counts is None
            else jnp.asarray(ss_counts, jnp.int32))

  def layer(x, pc):
    p, c = pc
    v, theta = pre(x, p)
    x = soft_threshold(v, theta) if ss_counts is None else support_select(v, theta, c)
    return x, x

  _, xs = jax.lax.scan(layer, x0, (params, counts))
  return jnp.concatenate([x0[None], xs])


def _per_instance_step(a, y, w_alista):
  """``alista_per_instance``'s layer (module docstring): ``(x, p) -> (v, theta)`` with
  ``theta`` of shape ``(..., 1)``, one threshold per instance."""
  l1 = lambda v: jnp.sum(jnp.abs(v), axis=-1, keepdims=True)
  tiny = 1e-30
  y_norm = jnp.linalg.norm(y, axis=-1, keepdims=True) + tiny
  wy_l1 = l1(y @ w_alista) + tiny
  n = a.shape[1]

  def step(x, p):
    r = x @ a.T - y
    g = r @ w_alista
    g_l1 = l1(g)
    feats = jnp.concatenate([
        jnp.log(jnp.linalg.norm(r, axis=-1, keepdims=True) / y_norm + tiny),
        jnp.log(g_l1 / wy_l1 + tiny),
        jnp.log(l1(x) / wy_l1 + 1e-6),
        jnp.mean((x != 0).astype(x.dtype), axis=-1, keepdims=True)], axis=-1)
    h = (jnp.tanh(feats @ p["mlp_w1"] + p["mlp_b1"]) @ p["mlp_w2"] + p["mlp_b2"]
         + feats @ p["lin"])
    gamma = p["gamma"] * jnp.exp(h[..., :1])
    theta = p["theta"] * (wy_l1 / n) * jnp.exp(h[..., 1:])
    return x - gamma * g, theta

  return step


@dataclasses.dataclass
class LISTAResult:
  """A trained network: ``params``, its config, the loss curve and train wall time.

  ``stages`` (stage-wise only): one dict per stage with ``layer``, ``lr``, ``steps``
  run, ``start`` (the first stage of a layer: ``"init"``, ``"previous"`` or
  ``"identity"``, see ``LISTAConfig.stage_init``; later stages: ``"best"``) and the best
  validation NMSE (dB) of that layer.
  """
  params: Dict[str, Any]
  config: LISTAConfig
  losses: np.ndarray
  wall_time: float
  w_alista: Optional[jax.Array] = None
  stages: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

  def predict(self, problem: Problem, y: jax.Array) -> jax.Array:
    """Per-layer estimates ``(K + 1, batch, n)`` for observations ``y`` (batch, m)."""
    a = _dictionary(problem)
    return apply(self.params, self.config.variant, a, y, self.w_alista,
                 _counts_for(self.config, a.shape[1]))

  def moved_to(self, problem: Problem) -> "LISTAResult":
    """The same learned parameters with ``problem``'s analytic weight: an ALISTA-type
    network moved to another dictionary without retraining (no training record)."""
    return LISTAResult(self.params, self.config, np.zeros(0), 0.0,
                       alista_weight(_dictionary(problem)))


def _counts_for(config: LISTAConfig, n: int):
  if not config.uses_support_selection:
    return None
  return support_counts(config.num_layers, n, config.ss_p_step, config.ss_p_max)


def _lr_scales(params, config):
  """Per-leaf learning-rate multipliers (``weight_lr_scale`` on the matrices)."""
  return {name: config.weight_lr_scale if name in ("W", "W1", "W2") else 1.0
          for name in params}


def _descent_grads(grads, params, config):
  """Gradients in the trained coordinates: ``d/d log theta = theta d/d theta`` with
  ``log_thresholds``."""
  if not config.log_thresholds:
    return grads
  return dict(grads, theta=grads["theta"] * params["theta"])


def _apply_updates(params, updates, config):
  """``params + updates``, except ``theta <- theta exp(update)`` with ``log_thresholds``
  (a zero update leaves every parameter exactly as it was)."""
  log = {"theta"} if config.log_thresholds else set()
  return {k: p * jnp.exp(updates[k]) if k in log else p + updates[k]
          for k, p in params.items()}


def _nmse(xs, x_true):
  """Normalized MSE ``E||x_hat - x||^2 / E||x||^2`` (linear), broadcast over layers."""
  return jnp.mean(jnp.sum((xs - x_true) ** 2, axis=-1)) / jnp.mean(
      jnp.sum(x_true ** 2, axis=-1))


def train(problem: Problem, config: LISTAConfig = LISTAConfig(),
          callback=None, log_every: int = 100,
          initial_params: Optional[Dict[str, Any]] = None) -> LISTAResult:
  """Trains a LISTA-type network on ``problem``'s ground-truth codes.

  ``initial_params`` (e.g. ``params`` of a network of the same variant and depth
  trained on a related problem) replaces ``init_params``: fine-tuning, e.g. a
  noiseless-trained ALISTA on a noisy family. Stage-wise stages keep their best
  validation point, so fine-tuning never ends worse than its start on the validation set.

  ``callback(step, {"loss": ...})`` is called every ``log_every`` steps (stage-wise:
  also ``layer`` and ``stage``).
  """
  if problem.truth is None:
    raise ValueError(f"LISTA training needs ground-truth codes; problem {problem.name!r} "
                     f"has no `truth` key (use a tasks.sparse.lasso problem).")
  config = config.resolved()
  a = _dictionary(problem)
  w_alista = alista_weight(a) if config.variant.startswith("alista") else None
  params = init_params(problem, config.variant, config.num_layers, config.init)
  if initial_params is not None:
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    if jax.tree_util.tree_map(jnp.shape, dict(initial_params)) != shapes:
      raise ValueError(f"initial_params must match init_params' shapes {shapes} "
                       f"(same variant, num_layers and dictionary size).")
    params = jax.tree_util.tree_map(jnp.asarray, dict(initial_params))
  counts = _counts_for(config, a.shape[1])
  key = problem.split_key(jax.random.PRNGKey(config.seed), "train")
  t0 = time.perf_counter()
  if config.training == "stagewise":
    params, losses, stages = _train_stagewise(
        problem, config, params, a, w_alista, counts, key, callback, log_every,
        stage_init="fresh" if initial_params is not None else config.stage_init)
  else:
    params, losses = _train_end_to_end(problem, config, params, a, w_alista, counts, key,
                                       callback, log_every)
    stages = []
  return LISTAResult(params, config, losses, time.perf_counter() - t0, w_alista, stages)


def _train_end_to_end(problem, config, params, a, w_alista, counts, key, callback,
                      log_every):
  sched = optax.cosine_decay_schedule(config.lr, max(config.steps, 1), 0.01)
  scales = _lr_scales(params, config)
  opt = optax.chain(optax.adam(sched), optax.stateless(
      lambda updates, _: {k: u * scales[k] for k, u in updates.items()}))
  opt_state = opt.init(params)

  def loss_fn(params, inst):
    xs = apply(params, config.variant, a, inst["y"], w_alista, counts)[1:]
    if config.loss_layers == "last":
      xs = xs[-1:]
    return _nmse(xs, inst[problem.truth])

  @jax.jit
  def step(params, opt_state, k):
    inst = problem.sample_batch(k, config.batch_size)
    loss, grads = jax.value_and_grad(loss_fn)(params, inst)
    updates, opt_state = opt.update(_descent_grads(grads, params, config), opt_state, params)
    return _apply_updates(params, updates, config), opt_state, loss

  losses = []
  for i in range(config.steps):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
    losses.append(loss)
    if callback is not None and (i + 1) % log_every == 0:
      callback(i + 1, {"loss": float(loss)})
  return params, np.asarray(jax.device_get(losses), np.float64)


def _train_stagewise(problem, config, params, a, w_alista, counts, key, callback,
                     log_every, stage_init="fresh"):
  """The papers' schedule (module docstring). Each stage gets a fresh Adam state; in
  the first stage of a layer the earlier layers get no gradient (Adam then leaves them
  exactly unchanged) and no backward pass."""
  truth = problem.truth
  val = problem.sample_batch(
      problem.split_key(jax.random.PRNGKey(config.seed), "outer_valid"), config.val_size)
  adam = optax.scale_by_adam()
  num_layers = config.num_layers
  all_counts = (np.zeros((num_layers,), np.int32) if counts is None else counts)
  scales = _lr_scales(params, config)

  def prefix_loss(params, ys, x_true, t, a=a, w_alista=w_alista, new_only=False):
    c = None if counts is None else all_counts[:t]
    x0 = None
    if new_only and t > 1:
      # Layers 1..t-1 are frozen: run them outside the differentiated part, so that
      # the backward pass covers layer t only.
      head = jax.tree_util.tree_map(lambda p: jax.lax.stop_gradient(p[:t - 1]), params)
      x0 = apply(head, config.variant, a, ys, w_alista, None if c is None else c[:-1])[-1]
      params = jax.tree_util.tree_map(lambda p: p[t - 1:], params)
      c = None if c is None else c[-1:]
    return _nmse(apply(params, config.variant, a, ys, w_alista, c, x0)[-1], x_true)

  compiled = {}

  def fns(t):
    if t not in compiled:
      def chunk(prefix, opt_state, keys, lr, new_only):
        def body(carry, k):
          prefix, opt_state = carry
          inst = problem.sample_batch(k, config.batch_size)
          loss, grads = jax.value_and_grad(prefix_loss)(prefix, inst["y"], inst[truth], t,
                                                        new_only=new_only)
          updates, opt_state = adam.update(_descent_grads(grads, prefix, config), opt_state,
                                           prefix)
          prefix = _apply_updates(prefix, {k: -lr * scales[k] * u for k, u in updates.items()},
                                  config)
          return (prefix, opt_state), loss
        (prefix, opt_state), losses = jax.lax.scan(body, (prefix, opt_state), keys)
        return prefix, opt_state, losses

      # Validation data and A are arguments, not closed-over constants: XLA would
      # otherwise constant-fold the first layer (x_0 = 0) for seconds.
      val_fn = jax.jit(lambda prefix, ys, x_true, a, w: prefix_loss(prefix, ys, x_true, t,
                                                                     a, w))
      compiled[t] = (jax.jit(chunk, static_argnums=4),
                     lambda prefix: val_fn(prefix, val["y"], val[truth], a, w_alista))
    return compiled[t]

  losses, stages, step = [], [], 0
  for t in range(1, num_layers + 1):
    run_chunk, val_loss = fns(t)
    start = "init"
    if stage_init != "fresh" and t > 1:
      params, start = _start_layer(params, t, config.variant, stage_init, val_loss)
    for s, decay in enumerate(config.stage_lr_decays):
      prefix = jax.tree_util.tree_map(lambda p: p[:t], params)
      opt_state = adam.init(prefix)
      best, best_prefix, bad, done = float(val_loss(prefix)), prefix, 0, 0
      lr = config.lr * decay
      while done < config.stage_steps and (config.patience == 0 or bad < config.patience):
        n = min(config.val_every, config.stage_steps - done)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(step, step + n))
        prefix, opt_state, chunk_losses = run_chunk(prefix, opt_state, keys,
                                                    jnp.float32(lr), s == 0)
        losses.append(np.asarray(chunk_losses, np.float64))
        done, step = done + n, step + n
        v = float(val_loss(prefix))
        if np.isfinite(v) and v < best:
          best, best_prefix, bad = v, prefix, 0
        else:
          bad += 1
        if callback is not None and step % log_every < n:
          callback(step, {"loss": float(chunk_losses[-1]), "layer": t, "stage": s,
                          "val_nmse_db": 10 * np.log10(best)})
      params = jax.tree_util.tree_map(lambda p, b: p.at[:t].set(b), params, best_prefix)
      stages.append({"layer": t, "lr": lr, "steps": done, "start": start if s == 0 else
                     "best", "val_nmse_db": float(10 * np.log10(best))})
  losses = np.concatenate(losses) if losses else np.zeros((0,))
  return params, losses, stages


def identity_layer(layer: Dict[str, jax.Array], variant: str) -> Dict[str, jax.Array]:
  """Parameters of one layer (no layer axis) that map ``x_k`` to itself: zero threshold
  (soft thresholding and support selection by 0 are the identity) and zero step
  (``lista``: ``W1 = 0``, ``W2 = I``)."""
  out = {k: jnp.zeros_like(v) for k, v in layer.items()}
  if variant == "lista":
    out["W2"] = jnp.eye(layer["W2"].shape[0], dtype=layer["W2"].dtype)
  elif variant in ("lista_cp", "lista_cpss"):
    out["W"] = layer["W"]  # the step g_k = 0 already makes the layer the identity
  return out


def _start_layer(params, t, variant, stage_init, val_loss):
  """Layer ``t``'s starting point (``LISTAConfig.stage_init``, ``t >= 2``) and its name
  (``"previous"`` or ``"identity"``)."""
  copied = jax.tree_util.tree_map(lambda p: p.at[t - 1].set(p[t - 2]), params)
  if stage_init == "previous":
    return copied, "previous"
  ident = identity_layer(jax.tree_util.tree_map(lambda p: p[t - 1], params), variant)
  ident = jax.tree_util.tree_map(lambda p, i: p.at[t - 1].set(i), params, ident)
  prefix = lambda ps: jax.tree_util.tree_map(lambda p: p[:t], ps)
  if float(val_loss(prefix(copied))) <= float(val_loss(prefix(ident))):
    return copied, "previous"
  return ident, "identity"


def evaluate(problem: Problem, result: Optional[LISTAResult], instances) -> np.ndarray:
  """NMSE (dB) against the ground truth per layer ``k = 0..K`` on ``instances``."""
  xs = result.predict(problem, instances["y"])
  return np.asarray(nmse_db(xs, instances[problem.truth]))
