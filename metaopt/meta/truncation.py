"""Truncation schedules: how long an inner run lives and where it starts.

An inner run is advanced ``truncation_length`` steps per outer step and restarted
(new task, fresh parameters) once its step counter reaches its horizon. A schedule
samples that horizon per run:

* ``constant``: every run lasts ``horizon`` steps;
* ``loguniform``: ``horizon`` log-uniform in ``[min_horizon, horizon]`` (short and
  long runs both appear, as in learned_optimization's LogUniformLengthSchedule);
* ``never_ending``: runs are never restarted (except after divergence).

With ``random_offsets`` the first run of each in-flight task starts at a uniformly
random step in ``[0, horizon)``, so the tasks of a batch do not restart in lockstep.

Horizons are never shorter than the truncation, so a run restarts at most once per
truncation (the unroll relies on it; see ``metaopt.meta.unroll``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

SCHEDULES = ("constant", "loguniform", "never_ending")

#: Horizon used by ``never_ending`` (an int32 that a step counter never reaches).
NEVER = 2**30


@dataclasses.dataclass(frozen=True)
class TruncationSchedule:
  """Samples inner-run horizons and initial step offsets; also the ``schedule``
  section of a meta-training config (``--set schedule.horizon=500``).

  Attributes:
    name: one of ``SCHEDULES``.
    truncation_length: inner steps per truncation (per outer step).
    horizon: (maximum) inner-run length in steps.
    min_horizon: smallest horizon of ``loguniform`` (raised to ``truncation_length``).
    random_offsets: start the first run of each task at a random step.
  """
  name: str = "constant"
  truncation_length: int = 20
  horizon: int = 200
  min_horizon: int = 0
  random_offsets: bool = True

  def __post_init__(self):
    if self.name not in SCHEDULES:
      raise ValueError(f"Unknown truncation schedule {self.name!r}; known: {SCHEDULES}.")
    if self.truncation_length < 1:
      raise ValueError(f"schedule.truncation_length must be >= 1, got "
                       f"{self.truncation_length}.")
    if self.name != "never_ending" and self.horizon < self.truncation_length:
      raise ValueError(
          f"schedule.horizon ({self.horizon}) must be >= schedule.truncation_length "
          f"({self.truncation_length}); raise the horizon or shorten the truncation.")
    if not 0 <= self.min_horizon <= max(self.horizon, 0):
      raise ValueError(f"schedule.min_horizon ({self.min_horizon}) must be in "
                       f"[0, schedule.horizon ({self.horizon})].")

  def sample_horizon(self, key: jax.Array) -> jax.Array:
    """int32 scalar horizon of a new inner run."""
    if self.name == "constant":
      return jnp.asarray(self.horizon, jnp.int32)
    if self.name == "never_ending":
      return jnp.asarray(NEVER, jnp.int32)
    lo = max(self.min_horizon, self.truncation_length)
    u = jax.random.uniform(key, (), jnp.float32, jnp.log(float(lo)), jnp.log(float(self.horizon)))
    return jnp.clip(jnp.round(jnp.exp(u)), lo, self.horizon).astype(jnp.int32)

  def initial_step(self, key: jax.Array, horizon: jax.Array) -> jax.Array:
    """int32 scalar starting step of the first run of an in-flight task."""
    if not self.random_offsets or self.name == "never_ending":
      return jnp.zeros((), jnp.int32)
    return jax.random.randint(key, (), 0, horizon, jnp.int32)
