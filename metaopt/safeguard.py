"""``safeguard(opt, fallback)``: a learned rule that falls back to a proven one when it fails.

A learned optimizer is trusted only where it has been tested. ``safeguard`` wraps any
optax transformation (typically ``metaopt.load(name)``) and watches two things:

* **non-finite updates**: a step whose update has a NaN or inf entry is replaced by
  the fallback's update for that step;
* **a descent test** on ``value`` (the loss of the parameters the update is applied
  to, as optax passes it): with ``m_t`` an exponential moving average of past losses,
  the step is a *failure* when ``value`` is not finite or

      value > m_t + tolerance * |m_t|,

  i.e. the last step raised the loss far above its recent level (mini-batch noise
  stays within the tolerance). A failed step is undone: the update returned is
  ``-u_{t-1}`` (the previous update, reverted) plus nothing else, and the next
  ``cooldown`` steps use the fallback. After ``max_failures`` failures the fallback
  is used for the rest of training.

Without ``value`` only the non-finite check runs. On well-behaved steps the cost is a
few scalar reductions and a copy of the update (kept to undo it): the fallback's
update is computed (``lax.cond``) only on steps that use it, so its state starts cold
when it first takes over (a cold Adam step is a normalized-gradient step, a safe
one). Memory: the fallback's state and one copy of the parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class SafeguardState(NamedTuple):
  """State of ``safeguard``.

  Attributes:
    inner: the guarded optimizer's state.
    fallback: the fallback's state.
    last_update: the previous update (to undo it after a failed descent test).
    loss_ema: f32 moving average of ``value`` (NaN before the first value).
    cooldown_left: i32 steps left on the fallback after a failure.
    num_failures: i32 descent-test failures so far.
    num_fallback_steps: i32 steps that used the fallback (non-finite updates included).
    permanent: bool, the fallback is used for the rest of training.
  """
  inner: Any
  fallback: Any
  last_update: Any
  loss_ema: jax.Array
  cooldown_left: jax.Array
  num_failures: jax.Array
  num_fallback_steps: jax.Array
  permanent: jax.Array


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def safeguard(opt: optax.GradientTransformation,
              fallback: optax.GradientTransformation = None, *, tolerance: float = 1.0,
              ema_decay: float = 0.9, cooldown: int = 10, max_failures: int = 3
              ) -> optax.GradientTransformationExtraArgs:
  """Wraps ``opt`` so that it falls back to ``fallback`` when it fails (module docstring).

  Args:
    opt: the optimizer to guard (any optax transformation).
    fallback: the proven rule (default ``optax.adam(1e-3)``).
    tolerance: relative rise of the loss above its moving average that fails the
      descent test (1.0: the loss doubled).
    ema_decay: decay of the loss moving average.
    cooldown: steps on the fallback after a failure.
    max_failures: failures after which the fallback is used for good.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params,
    value=loss)`` (``value`` optional). ``state.num_failures`` and
    ``state.num_fallback_steps`` say what happened.
  """
  if fallback is None:
    fallback = optax.adam(1e-3)
  if tolerance <= 0 or not 0 <= ema_decay < 1 or cooldown < 0 or max_failures < 1:
    raise ValueError(f"safeguard needs tolerance > 0, 0 <= ema_decay < 1, cooldown >= 0 "
                     f"and max_failures >= 1; got {tolerance}, {ema_decay}, {cooldown}, "
                     f"{max_failures}.")
  inner = optax.with_extra_args_support(opt)
  backup = optax.with_extra_args_support(fallback)

  def init(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return SafeguardState(inner.init(params), backup.init(params), zeros,
                          jnp.asarray(jnp.nan, jnp.float32), i32(0), i32(0), i32(0),
                          jnp.asarray(False))

  def update(grads, state: SafeguardState, params=None, value=None, **extra):
    if value is None:
      failed = jnp.asarray(False)
      ema = state.loss_ema
    else:
      value = jnp.asarray(value, jnp.float32)
      seen = jnp.isfinite(state.loss_ema)
      failed = ~jnp.isfinite(value) | (
          seen & (value > state.loss_ema + tolerance * jnp.abs(state.loss_ema)))
      fresh = jnp.where(seen, ema_decay * state.loss_ema + (1 - ema_decay) * value, value)
      ema = jnp.where(failed, state.loss_ema, fresh)  # A failed value is not a baseline.
    num_failures = state.num_failures + failed.astype(jnp.int32)
    permanent = state.permanent | (num_failures >= max_failures)
    cooldown_left = jnp.where(failed, cooldown, jnp.maximum(state.cooldown_left - 1, 0))
    use_fallback_now = permanent | (state.cooldown_left > 0)

    def learned(_):
      u, s = inner.update(grads, state.inner, params, value=value, **extra)
      return u, s, state.fallback

    def proven(_):
      u, s = backup.update(grads, state.fallback, params, value=value, **extra)
      return u, state.inner, s

    updates, inner_state, fallback_state = jax.lax.cond(use_fallback_now, proven, learned,
                                                        None)
    bad = ~_all_finite(updates)
    updates, inner_state, fallback_state = jax.lax.cond(
        bad & ~use_fallback_now, proven, lambda _: (updates, inner_state, fallback_state),
        None)
    # Neither rule gave a finite step (non-finite gradients): do not move.
    updates = jax.lax.cond(_all_finite(updates), lambda u: u,
                           lambda u: jax.tree_util.tree_map(jnp.zeros_like, u), updates)
    # A failed descent test undoes the previous step instead of taking a new one, and
    # leaves both rules' states as they were.
    keep = lambda old, new: jax.tree_util.tree_map(  # noqa: E731
        lambda a, b: jnp.where(failed, a, b), old, new)
    updates = keep(jax.tree_util.tree_map(jnp.negative, state.last_update), updates)
    inner_state = keep(state.inner, inner_state)
    fallback_state = keep(state.fallback, fallback_state)
    last = jax.tree_util.tree_map(lambda u: jnp.where(failed, jnp.zeros_like(u), u), updates)
    used = (use_fallback_now | bad) & ~failed
    return updates, SafeguardState(inner_state, fallback_state, last, ema, cooldown_left,
                                   num_failures,
                                   state.num_fallback_steps + used.astype(jnp.int32),
                                   permanent)

  return optax.GradientTransformationExtraArgs(init, update)
