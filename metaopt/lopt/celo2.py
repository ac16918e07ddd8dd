"""Celo2-style learned optimizer (``celo2``): a small normalized per-parameter MLP whose
direction is orthogonalized by Newton-Schulz for hidden matrices, Adam elsewhere,
decoupled weight decay and an external learning-rate schedule.

After Celo2 (Moudgil et al., ICLR 2026; github.com/amoudgl/celo): the learned part
sees only per-tensor normalized statistics and its output is normalized (here by the
orthogonalization), so the *size* of every step comes from the rule (a learning rate,
a schedule, Muon's RMS matching), never from raw network outputs. Written for this
library (its feature columns, fused per-parameter MLP and horizon contract).

Routing (static, per tensor): a 2-D matrix with both dimensions > 1 is a *hidden
matrix* unless ``param_info`` gives it another role than ``hidden`` (``input`` and
``output`` matrices, i.e. embeddings and heads, as Celo2 routes them by name) or its
path matches ``config.adam_path_regex`` (``embed`` by default). Every other tensor
(vectors, biases, scalars, embeddings, >2-D tensors) takes the Adam path.

Math, at step ``t >= 1`` (``g_t`` the gradient, ``x_t`` the parameter, ``H`` the run's
number of updates, 0 = unknown):

Schedule and step size (shared by both paths)::

    w = max(1, round(warmup_fraction H))
    s_t = min(1, t / w) (f + (1 - f) (1 + cos(pi clip((t - w) / (H - w), 0, 1))) / 2)  (H > 0)
    s_t = 1                                                                          (H = 0)
    lr_t = exp(theta.log_lr) s_t           lambda = exp(theta.log_weight_decay)

Adam path (optax.adam's direction, debiased)::

    m_t = b1 m + (1 - b1) g_t              v_t = b2 v + (1 - b2) g_t^2
    a_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
    x_{t+1} = x_t - lr_t (exp(theta.log_adam_scale) a_t + lambda [ndim >= 2] x_t)

Hidden matrices ``(r, c)``, with ``g~ = clip(g_t, -C, C)`` (``C = feature_clip`` = 1e12:
only absurd gradients are clipped, so that squares and sums stay finite)::

    mu_k = beta_k mu_k + (1 - beta_k) g~                 (momenta, beta in momentum_decays)
    nu = rho nu + (1 - rho) g~^2                         (rho = rms_decay)
    R_j = gamma_j R_j + (1 - gamma_j) mean_cols(g~^2 + 1e-30)     (factored, Adafactor:
    K_j = gamma_j K_j + (1 - gamma_j) mean_rows(g~^2 + 1e-30)      one row and one column
    F_j = rsqrt(R_j / mean(R_j)) rsqrt(K_j)  (outer product)       statistic per decay)
    r = rsqrt(nu + 1e-8)
    columns z = [g~, x, mu_k, mu_k r, g~ r, r, g~ F_j, mu_j F_j]
    z_i <- z_i / sqrt(1e-5 + mean(z_i^2))                (input normalization, per tensor)
    D = sum_i theta.skip_i z_i + f_theta(z, phi(t, H))   (phi: fraction features)
    O = NS_5(D)
    x_{t+1} = x_t - lr_t (match_rms sqrt(max(r, c)) O + lambda x_t)

``f_theta`` is a ReLU MLP (hidden ``(8, 8)`` as Celo2) applied to every entry, whose last
layer starts at zero; ``skip`` starts at the one-hot of the first momentum, so at the
initial theta the hidden matrices follow Muon (orthogonalized momentum) and the rest
Adam. ``phi`` are the fraction-of-training features (``features.fraction_features``:
all zero when ``H`` is unknown). ``NS_5`` is the quintic Newton-Schulz iteration of
Muon::

    X_0 = D / (|D|_F + eps)    (transposed so that rows <= columns)
    X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,    A_k = X_k X_k^T   (k = 0..4)
    (a, b, c) = (3.4445, -4.7750, 2.0315)

which maps every singular value of ``X_0`` (in (0, 1]) to roughly [0.7, 1.2] (those
above ~1e-3 of the largest), the singular vectors unchanged: ``O ~ U V^T``. Its
Frobenius normalization makes the MLP's output scale irrelevant (the normalized
output), and ``match_rms sqrt(max(r, c))`` (optax.contrib.muon's ``consistent_rms``,
Moonlight) gives the matrix step about the RMS of an Adam step, so one learning rate
serves both paths. Wide matrices (``n > 1.5 m``) run the same iteration on their
``m x m`` Gram matrix (``newton_schulz``: about half the FLOPs at ``n = 4 m``).

The horizon (``base`` module docstring): ``init`` records ``num_steps`` (maybe traced)
in the state; ``update`` reads it from there, for the schedule and the fraction
features.

Numerics: finite wherever optax.adam is (``tests/lopt/test_finite.py``): the Adam path
is optax.adam's arithmetic; the matrix path clips its feature gradient at ``C`` (so
squares and their per-tensor sums stay finite), floors every rsqrt's argument, and
``NS_5`` of a zero matrix is zero (huge, tiny, constant, zero, sparse and spiking
gradients are tested).

Meta-parameters ``theta``: ``log_lr ()``, ``log_weight_decay ()``, ``log_adam_scale ()``,
``skip (num_columns,)`` and ``mlp`` (``mlp.init_mlp`` layers, input
``num_columns + 7`` fraction features, output 1).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import features as F
from metaopt.lopt import mlp as mlp_lib
from metaopt.lopt.base import LearnedOptimizer, horizon_value, register

#: Muon's quintic Newton-Schulz coefficients (Jordan 2024; Celo2; optax.contrib.muon).
NS_COEFFS = (3.4445, -4.7750, 2.0315)
#: Number of fraction-of-training features (``features.fraction_features``).
NUM_FRACTION = 2 + len(F.FRACTION_CENTERS)


@dataclasses.dataclass(frozen=True)
class Celo2Config:
  """Config of the Celo2-style learned optimizer (module docstring for the math).

  Attributes:
    momentum_decays: decays ``beta_k`` of the matrix path's gradient momenta.
    rms_decay: ``rho``, decay of the matrix path's squared-gradient EMA.
    factored_decays: decays ``gamma_j`` of the factored row/column statistics.
    hidden_sizes: hidden widths of the per-parameter MLP.
    b1, b2, eps: Adam's decays and epsilon (the Adam path).
    ns_coeffs, ns_steps, ns_eps: the Newton-Schulz iteration.
    gram_newton_schulz: run it on the Gram matrix for wide matrices (``newton_schulz``).
    match_rms: RMS of the orthogonalized step relative to ``lr`` (Moonlight's 0.2).
    init_lr: ``exp(log_lr)`` at theta's initialization (AdamW's usual 1e-3).
    init_weight_decay: ``lambda`` at initialization (AdamW's, multiplied by ``lr_t``).
    warmup_fraction: linear warm-up over this fraction of a known horizon.
    final_lr_fraction: ``f``, the cosine's final fraction of the base learning rate.
    feature_clip: ``C``, the clip of gradients entering the matrix path's features.
    adam_path_regex: tensors whose path (``jax.tree_util.keystr``) matches take the
      Adam path (embeddings; empty: none).
    decay_vectors: apply weight decay to tensors with ``ndim < 2`` too.
  """
  momentum_decays: Tuple[float, ...] = (0.9, 0.99, 0.999)
  rms_decay: float = 0.95
  factored_decays: Tuple[float, ...] = (0.9, 0.99, 0.999)
  hidden_sizes: Tuple[int, ...] = (8, 8)
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  ns_coeffs: Tuple[float, ...] = NS_COEFFS
  ns_steps: int = 5
  ns_eps: float = 1e-7
  gram_newton_schulz: bool = True
  match_rms: float = 0.2
  init_lr: float = 1e-3
  init_weight_decay: float = 1e-2
  warmup_fraction: float = 0.05
  final_lr_fraction: float = 0.0
  feature_clip: float = 1e12
  adam_path_regex: str = "embed"
  decay_vectors: bool = False


class Celo2State(NamedTuple):
  """Optimizer state.

  Attributes:
    count: int32 updates applied.
    horizon: int32 the run's number of updates (0: unknown), set by ``init``.
    leaves: one dict per parameter leaf (flattening order): ``{"m", "v"}`` on the Adam
      path; ``{"mu": (K arrays), "nu", "row": (J,), "col": (J,)}`` for hidden
      matrices (``row``/``col``: tuples of ``(r,)`` / ``(c,)`` factored statistics).
  """
  count: jax.Array
  horizon: jax.Array
  leaves: Tuple[Any, ...]


def num_columns(config: Celo2Config) -> int:
  """Per-element input columns of the matrix path (module docstring)."""
  k, j = len(config.momentum_decays), len(config.factored_decays)
  return 2 + 2 * k + 2 + 2 * j


def newton_schulz(x: jax.Array, coeffs=NS_COEFFS, steps: int = 5,
                  eps: float = 1e-7, gram: bool = True) -> jax.Array:
  """Quintic Newton-Schulz orthogonalization of a matrix (module docstring): about the
  polar factor ``U V^T`` of ``x``, singular values in roughly [0.7, 1.2].

  With ``gram`` and a wide matrix (``m x n`` after transposing, ``n > 1.5 m``) the same
  iteration runs on ``m x m`` matrices: every ``X_k = Q_k X_0`` with ``Q_k`` a polynomial
  in ``A_0 = X_0 X_0^T`` (so all commute), hence ``A_k = Q_k A_0 Q_k``,
  ``Q_{k+1} = p(A_k) Q_k``, ``X_5 = Q_5 X_0``: ``4 m^2 n + 34 m^3`` FLOPs instead of
  ``20 m^2 n + 10 m^3`` (equal in exact arithmetic; tested against the direct form)."""
  if x.ndim != 2:
    raise ValueError(f"newton_schulz needs a matrix, got shape {x.shape}.")
  a, b, c = coeffs
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  x = x / (jnp.sqrt(jnp.sum(jnp.square(x))) + eps)
  m, n = x.shape
  if gram and n > 1.5 * m and steps > 0:
    a0 = x @ x.T
    eye = jnp.eye(m, dtype=x.dtype)
    q, ak = None, a0
    for _ in range(steps):
      if q is not None:
        ak = (q @ a0) @ q
      p = a * eye + b * ak + c * (ak @ ak)
      q = p if q is None else p @ q
    x = q @ x
  else:
    for _ in range(steps):
      gram_k = x @ x.T
      x = a * x + (b * gram_k + c * (gram_k @ gram_k)) @ x
  return x.T if transposed else x


def schedule(count: jax.Array, horizon: jax.Array, warmup_fraction: float,
             final_fraction: float, dtype=jnp.float32) -> jax.Array:
  """The learning-rate multiplier ``s_t`` at update ``count`` (1-based) of a run of
  ``horizon`` updates: linear warm-up then cosine to ``final_fraction``; 1 when the
  horizon is unknown (``horizon <= 0``). Traceable in both arguments."""
  known = horizon > 0
  h = jnp.where(known, horizon, 1).astype(dtype)
  t = jnp.asarray(count).astype(dtype)
  w = jnp.maximum(1.0, jnp.round(warmup_fraction * h))
  warm = jnp.minimum(1.0, t / w)
  progress = jnp.clip((t - w) / jnp.maximum(h - w, 1.0), 0.0, 1.0)
  cos = final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
  return jnp.where(known, warm * cos, jnp.ones((), dtype))


def orthogonalized_leaves(params, param_info=None, adam_path_regex: str = "") -> List[bool]:
  """Per leaf (flattening order): True for hidden matrices (the Newton-Schulz path).

  A leaf is a hidden matrix when it is 2-D with both dimensions > 1, its path does not
  match ``adam_path_regex``, and, when ``param_info`` is given, its role is ``hidden``.
  """
  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  infos = (treedef.flatten_up_to(param_info) if param_info is not None
           else [None] * len(paths_leaves))
  pattern = re.compile(adam_path_regex) if adam_path_regex else None
  out = []
  for (path, leaf), info in zip(paths_leaves, infos):
    shape = jnp.shape(leaf)
    hidden = len(shape) == 2 and min(shape) > 1
    if pattern is not None and pattern.search(jax.tree_util.keystr(path)):
      hidden = False
    if info is not None and getattr(info, "role", "hidden") != "hidden":
      hidden = False
    out.append(hidden)
  return out


def _matrix_columns(config, g, p, mu, nu, row, col):
  """The per-element input columns of a hidden matrix (module docstring), unnormalized."""
  r = jax.lax.rsqrt(nu + F.RSQRT_EPS)
  cols = [g, p] + list(mu) + [m * r for m in mu] + [g * r, r]
  facs = []
  for rj, cj in zip(row, col):
    rf = jax.lax.rsqrt(jnp.maximum(rj / jnp.maximum(jnp.mean(rj), 1e-30), 1e-30))
    cf = jax.lax.rsqrt(jnp.maximum(cj, 1e-30))
    facs.append(rf[:, None] * cf[None, :])
  cols += [g * f for f in facs]
  # Adafactor-normalized momenta: each momentum with the factored statistic of the same
  # index (Celo2's pairing; the last ones repeat if the lists differ in length).
  cols += [mu[min(i, len(mu) - 1)] * f for i, f in enumerate(facs)]
  return cols


def scale_by_celo2(config: Celo2Config, theta, param_info=None
                   ) -> optax.GradientTransformationExtraArgs:
  """The rule of the module docstring as an optax transformation (``theta`` may be
  traced; ``param_info`` optional, for the routing)."""
  b1, b2, eps = config.b1, config.b2, config.eps
  mom = tuple(config.momentum_decays)
  fac = tuple(config.factored_decays)
  rho = config.rms_decay
  clip = config.feature_clip

  def routes(params):
    return orthogonalized_leaves(params, param_info, config.adam_path_regex)

  def init_leaf(p, hidden):
    dt = mlp_lib.compute_dtype(p)
    z = jnp.zeros(jnp.shape(p), dt)
    if not hidden:
      return {"m": z, "v": jnp.zeros_like(z)}
    r, c = jnp.shape(p)
    return {"mu": tuple(jnp.zeros_like(z) for _ in mom), "nu": jnp.zeros_like(z),
            "row": tuple(jnp.zeros((r,), dt) for _ in fac),
            "col": tuple(jnp.zeros((c,), dt) for _ in fac)}

  def init_fn(params, num_steps=None):
    leaves = jax.tree_util.tree_leaves(params)
    return Celo2State(jnp.zeros((), jnp.int32), horizon_value(num_steps),
                      tuple(init_leaf(p, h) for p, h in zip(leaves, routes(params))))

  def update_fn(grads, state, params=None, **extra_args):
    del extra_args  # the rule reads gradients and parameters only
    mlp_lib.check_params(params, "celo2")
    g_leaves, treedef = jax.tree_util.tree_flatten(grads)
    p_leaves = treedef.flatten_up_to(params)
    hidden = routes(params)
    t = optax.safe_increment(state.count)
    tf = t.astype(jnp.float32)
    lr = jnp.exp(theta["log_lr"]) * schedule(t, state.horizon, config.warmup_fraction,
                                             config.final_lr_fraction)
    wd = jnp.exp(theta["log_weight_decay"])
    adam_scale = jnp.exp(theta["log_adam_scale"])
    # The per-tensor fraction features enter the MLP's first layer as a bias (one
    # vector-matrix product per step instead of 7 broadcast columns per entry).
    first = theta["mlp"][0]
    n_cols = num_columns(config)
    layers = ({"w": first["w"][:n_cols],
               "b": first["b"] + F.fraction_features(t, state.horizon) @ first["w"][n_cols:]},
              ) + tuple(theta["mlp"][1:])
    c1, c2 = 1.0 - b1 ** tf, 1.0 - b2 ** tf

    updates, new_leaves = [], []
    for g, p, s, is_hidden in zip(g_leaves, p_leaves, state.leaves, hidden):
      dt = mlp_lib.compute_dtype(p)
      g = jnp.asarray(g, dt)
      x = jnp.asarray(p, dt)
      decay = wd * x if (jnp.ndim(p) >= 2 or config.decay_vectors) else 0.0
      if not is_hidden:
        m = b1 * s["m"] + (1.0 - b1) * g
        v = b2 * s["v"] + (1.0 - b2) * jnp.square(g)
        a = (m / c1.astype(dt)) / (jnp.sqrt(v / c2.astype(dt)) + eps)
        step = adam_scale * a + decay
        new_leaves.append({"m": m, "v": v})
      else:
        gc = jnp.clip(g, -clip, clip)
        g2 = jnp.square(gc) + 1e-30
        mu = tuple(b * m + (1.0 - b) * gc for b, m in zip(mom, s["mu"]))
        nu = rho * s["nu"] + (1.0 - rho) * jnp.square(gc)
        row_mean, col_mean = jnp.mean(g2, axis=1), jnp.mean(g2, axis=0)
        row = tuple(d * rj + (1.0 - d) * row_mean for d, rj in zip(fac, s["row"]))
        col = tuple(d * cj + (1.0 - d) * col_mean for d, cj in zip(fac, s["col"]))
        cols = F.normalize_columns(_matrix_columns(config, gc, x, mu, nu, row, col))
        direction = sum(w * z for w, z in zip(theta["skip"], cols))
        (learned,) = mlp_lib.fused_mlp(layers, cols)
        o = newton_schulz(direction + learned, config.ns_coeffs, config.ns_steps,
                          config.ns_eps, config.gram_newton_schulz)
        step = (config.match_rms * math.sqrt(max(jnp.shape(p)))) * o + decay
        new_leaves.append({"mu": mu, "nu": nu, "row": row, "col": col})
      updates.append((-lr * step).astype(jnp.result_type(p)))
    return treedef.unflatten(updates), Celo2State(t, state.horizon, tuple(new_leaves))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@register
class Celo2LOpt(LearnedOptimizer):
  """The Celo2-style learned optimizer (module docstring)."""

  arch = "celo2"
  Config = Celo2Config

  def init_meta_params(self, key):
    c = self.config
    n = num_columns(c)
    layers = mlp_lib.init_mlp(key, (n + NUM_FRACTION,) + tuple(c.hidden_sizes) + (1,))
    last = dict(layers[-1], w=jnp.zeros_like(layers[-1]["w"]))
    # Skip weights: the first momentum (column 2), i.e. Muon at initialization.
    return {
        "log_lr": jnp.asarray(math.log(c.init_lr), jnp.float32),
        "log_weight_decay": jnp.asarray(math.log(c.init_weight_decay), jnp.float32),
        "log_adam_scale": jnp.zeros((), jnp.float32),
        "skip": jax.nn.one_hot(2, n, dtype=jnp.float32),
        "mlp": tuple(layers[:-1]) + (last,),
    }

  def transform(self, theta, *, num_steps: Optional[Any] = None, param_info: Any = None):
    tx = scale_by_celo2(self.config, theta, param_info)
    return optax.GradientTransformationExtraArgs(
        lambda params: tx.init(params, num_steps), tx.update)
