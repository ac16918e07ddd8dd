"""Math-structured learned update rule (Liu, Chen, Wang, Yin, Cai, ICML 2023, "Towards
Constituting Mathematical Structures for Learning to Optimize"), ``math_l2o``.

The rule is a learned proximal-gradient step with a Nesterov-style extrapolation, for
problems ``min_x f(x) + g(x)`` with ``g = l1_strength * ||x||_1`` (``g = 0`` when
``l1_strength == 0``: the smooth mode)::

    x_{k+1} = prox_{P_k g}(y_k - P_k * grad f(y_k) - b_k)
    y_{k+1} = x_{k+1} + a_k * (x_{k+1} - x_k)          (only with acceleration=True)

``y_k`` are the parameters the optimizer is called with (where the gradient is taken),
``x_k`` the last proximal output (kept in the state). Without acceleration ``y = x``.
The optax update is ``y_{k+1} - y_k``, so the prox acts through the updates.

A coordinate-wise network (LSTM as in the paper, or an MLP) with shared weights reads
per-coordinate features and emits three numbers ``(z_P, z_b, z_a)`` per coordinate:

* preconditioner ``P_k = lr * 2 * sigmoid(z_P)``: positive and bounded in ``(0, 2 lr)``,
  equal to ``lr`` when ``z_P = 0``;
* bias ``b_k = bias_scale * tanh(z_b) * (y_k - y_{k-1})``: proportional to the last
  update, so it vanishes as the iterates converge (the paper shows a bias must vanish
  asymptotically for the rule to converge to a minimizer);
* acceleration ``a_k = sigmoid(z_a)`` in ``(0, 1)``.

With a zero readout (``z = 0``) and ``acceleration=False`` the rule is exactly
proximal gradient descent with step ``lr`` (SGD in the smooth mode, ISTA for LASSO):
the initial θ has a small readout, so meta-training starts near that classic method.

Inputs are named features (``config.features``), each a function of the gradient, the
iterate and the last update, preprocessed with the log-magnitude/sign map of
Andrychowicz et al. (``lstm.preprocess_gradient``); the input width is derived from the
list. The rule does not use ``value`` or ``num_steps`` (horizon-free).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import lstm as lstm_lib
from metaopt.lopt.base import LearnedOptimizer, register
from tasks.registry import unknown_name_message

#: Per-coordinate inputs: ``(grad, iterate, last_update, p) -> (..., k)``.
COORD_FEATURES: Dict[str, Callable[..., jax.Array]] = {
    "grad": lambda g, y, d, p: lstm_lib.preprocess_gradient(g, p),
    "iterate": lambda g, y, d, p: lstm_lib.preprocess_gradient(y, p),
    "last_update": lambda g, y, d, p: lstm_lib.preprocess_gradient(d, p),
}

NETS = ("lstm", "mlp")


def soft_threshold(x: jax.Array, threshold: jax.Array) -> jax.Array:
  """``prox`` of ``threshold * |.|`` (elementwise): ``sign(x) * max(|x| - t, 0)``."""
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


class MathL2OState(NamedTuple):
  """Optimizer state.

  Attributes:
    step: int32 scalar.
    x: pytree like params, the last proximal output ``x_k`` (``x_0`` = initial params).
    last_update: pytree like params, ``y_k - y_{k-1}`` (zero at the start).
    net: per-coordinate LSTM state (leaves ``param.shape + (hidden,)`` per layer and
      h/c), or ``()`` for the MLP network.
  """
  step: jax.Array
  x: Any
  last_update: Any
  net: Any

  def eval_params(self, params):
    """The iterate to evaluate: the proximal output ``x`` (``params`` hold the
    extrapolated point where the gradient is taken, which is not sparse)."""
    del params
    return self.x


@register
class MathL2O(LearnedOptimizer):
  """Learned preconditioner, bias and acceleration inside a proximal-gradient step."""

  arch = "math_l2o"

  @dataclasses.dataclass(frozen=True)
  class Config:
    """Attributes:
      net: coordinate-wise network, ``"lstm"`` (paper) or ``"mlp"``.
      hidden: hidden width of each network layer (paper: 20).
      num_layers: LSTM layers or MLP hidden layers.
      features: names from ``COORD_FEATURES``.
      preprocess_p: ``p`` of the log-magnitude/sign input preprocessing.
      lr: base step; the preconditioner lies in ``(0, 2 * lr)`` and equals ``lr`` at
        zero network output.
      bias_scale: bound of the bias coefficient (0 disables the bias).
      acceleration: use the learned extrapolation ``y = x + a (x - x_prev)``.
      l1_strength: ``g = l1_strength * ||x||_1``; 0 gives the smooth mode.
      readout_init_scale: std of the initial readout weights.
    """
    net: str = "lstm"
    hidden: int = 20
    num_layers: int = 2
    features: Tuple[str, ...] = ("grad", "iterate", "last_update")
    preprocess_p: float = 10.0
    lr: float = 0.1
    bias_scale: float = 1.0
    acceleration: bool = True
    l1_strength: float = 0.0
    readout_init_scale: float = 0.01

    def __post_init__(self):
      if self.net not in NETS:
        raise ValueError(f"math_l2o: unknown net {self.net!r}; expected one of {NETS}.")
      if isinstance(self.features, str):
        raise TypeError(f"math_l2o: features must be a tuple of names, got the string "
                        f"{self.features!r}; write ({self.features!r},).")
      if not self.features:
        raise ValueError(f"math_l2o: features is empty; pick from {sorted(COORD_FEATURES)}.")
      for name in self.features:
        if name not in COORD_FEATURES:
          raise ValueError(f"math_l2o: {unknown_name_message('feature', name, COORD_FEATURES)}")
      if self.hidden < 1 or self.num_layers < 1:
        raise ValueError("math_l2o: hidden and num_layers must be >= 1.")
      if self.lr <= 0 or self.l1_strength < 0 or self.bias_scale < 0:
        raise ValueError(f"math_l2o: need lr > 0 (got {self.lr}), l1_strength >= 0 (got "
                         f"{self.l1_strength}) and bias_scale >= 0 (got {self.bias_scale}).")

  def num_inputs(self) -> int:
    """Input width, derived from ``config.features`` by shape inference."""
    z = jax.ShapeDtypeStruct((3,), jnp.float32)
    return int(jax.eval_shape(lambda g: self._inputs(g, g, g), z).shape[-1])

  def _inputs(self, g, y, d):
    cfg = self.config
    return jnp.concatenate([COORD_FEATURES[n](g, y, d, cfg.preprocess_p) for n in cfg.features],
                           axis=-1)

  def init_meta_params(self, key):
    """θ = {"net": LSTM layers (or MLP layers ``{"w","b"}``), "readout": {"w": (H, 3),
    "b": (3,)}} with readout columns (z_P, z_b, z_a)."""
    # One compiled program instead of one per eager random op.
    return jax.jit(self._init_meta_params)(key)

  def _init_meta_params(self, key):
    cfg = self.config
    k_net, k_out = jax.random.split(key)
    n_in = self.num_inputs()
    if cfg.net == "lstm":
      net = lstm_lib.init_lstm(k_net, n_in, cfg.hidden, cfg.num_layers)
    else:
      net, size = [], n_in
      for k in jax.random.split(k_net, cfg.num_layers):
        w = jax.random.normal(k, (size, cfg.hidden), jnp.float32) * jnp.sqrt(2.0 / size)
        net.append({"w": w, "b": jnp.zeros((cfg.hidden,), jnp.float32)})
        size = cfg.hidden
    return {
        "net": net,
        "readout": {
            "w": cfg.readout_init_scale * jax.random.normal(k_out, (cfg.hidden, 3), jnp.float32),
            "b": jnp.zeros((3,), jnp.float32),
        },
    }

  def _net_apply(self, theta, x, state):
    if self.config.net == "lstm":
      return lstm_lib.lstm_apply(theta["net"], x, state)
    for layer in theta["net"]:
      x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x, state

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    """The learned rule; ``num_steps``, ``param_info`` and ``value`` are not used."""
    del num_steps, param_info
    cfg = self.config

    def init_fn(params):
      cast = lambda p: p.astype(lstm_lib.compute_dtype(p))
      if cfg.net == "lstm":
        net = jax.tree_util.tree_map(
            lambda p: lstm_lib.zero_lstm_state(p.shape, cfg.hidden, cfg.num_layers,
                                               lstm_lib.compute_dtype(p)), params)
      else:
        net = ()
      return MathL2OState(step=jnp.zeros((), jnp.int32),
                          x=jax.tree_util.tree_map(cast, params),
                          last_update=jax.tree_util.tree_map(lambda p: jnp.zeros_like(cast(p)),
                                                             params),
                          net=net)

    def update_fn(updates, state, params=None, **extra_args):
      del extra_args
      if params is None:
        raise ValueError("math_l2o needs the current params: call "
                         "update(grads, state, params).")
      treedef = jax.tree_util.tree_structure(updates)
      leaves = [treedef.flatten_up_to(t) for t in (updates, params, state.x, state.last_update)]
      nets = treedef.flatten_up_to(state.net) if cfg.net == "lstm" else [()] * treedef.num_leaves
      out_u, out_x, out_d, out_net = [], [], [], []
      for g, y, x_prev, d, s in zip(*leaves, nets):
        out_dtype, dtype = g.dtype, lstm_lib.compute_dtype(g)
        g, y = g.astype(dtype), y.astype(dtype)
        h, s = self._net_apply(theta, self._inputs(g, y, d), s)
        z = h @ theta["readout"]["w"] + theta["readout"]["b"]
        precond = cfg.lr * 2.0 * jax.nn.sigmoid(z[..., 0])
        bias = cfg.bias_scale * jnp.tanh(z[..., 1]) * d
        x_new = y - precond * g - bias
        if cfg.l1_strength > 0:
          x_new = soft_threshold(x_new, cfg.l1_strength * precond)
        y_new = x_new
        if cfg.acceleration:
          y_new = x_new + jax.nn.sigmoid(z[..., 2]) * (x_new - x_prev)
        u = y_new - y
        out_u.append(u.astype(out_dtype))
        out_x.append(x_new)
        out_d.append(u)
        out_net.append(s)
      new_net = treedef.unflatten(out_net) if cfg.net == "lstm" else ()
      return treedef.unflatten(out_u), MathL2OState(
          step=optax.safe_increment(state.step), x=treedef.unflatten(out_x),
          last_update=treedef.unflatten(out_d), net=new_net)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

