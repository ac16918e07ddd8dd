"""μLO (``mulo``): the per-parameter MLP optimizer under μP, so one θ transfers
across model width (Thérien et al. 2024, "μLO: Compute-Efficient Meta-Generalization
of Learned Optimizers", arXiv 2406.00153).

The per-parameter network, its features and its step
``d * exp(m * exp_mult) * step_mult`` are those of ``metaopt.lopt.mlp`` (features
second-moment normalized per tensor, so the raw step is O(1) per coordinate, like
Adam's). μP then fixes, per tensor, a learning-rate multiplier applied to that step,
from the tensor's declared role (``tasks.ParamInfo``):

==========  ====================================  ==========================
role        tensor                                step multiplier
==========  ====================================  ==========================
``input``   first matrix (data -> hidden)         1
``hidden``  hidden -> hidden matrix               1 / fan_in
``output``  readout (hidden -> logits)            1
``bias``    biases and gains                      1
``scalar``  anything else                         1
==========  ====================================  ==========================

This is μP for Adam-like (normalized) updates in the form where the model carries
the rest of the contract: fan-in (variance ``1/fan_in``) initialization, a
zero-initialized readout and an output multiplier ``1/width`` on the readout in the
forward pass (``tasks.mlp`` with ``parametrization="mup"`` does all three). With
that multiplier the readout's step needs no ``1/fan_in``: it is already divided by
the width in the forward pass. A hidden matrix's update ``ΔW`` moves its output by
``x @ ΔW``, a sum of ``fan_in`` correlated terms, hence the ``1/fan_in``.

The optimizer never guesses roles from names: ``transform`` requires ``param_info``
(a pytree of ``ParamInfo`` with the params' structure; ``Task.param_info(params)``
for registered tasks, or ``mlp_param_info`` below for your own models).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np

from metaopt.lopt import mlp
from metaopt.lopt.base import register
from tasks.base import ParamInfo

#: Learning-rate multiplier per role, as a function of fan_in.
ROLE_MULTIPLIERS = {
    "input": lambda fan_in: 1.0,
    "hidden": lambda fan_in: 1.0 / fan_in,
    "output": lambda fan_in: 1.0,
    "bias": lambda fan_in: 1.0,
    "scalar": lambda fan_in: 1.0,
}


@dataclasses.dataclass(frozen=True)
class MuLOConfig(mlp.MLPConfig):
  """Same fields as ``MLPConfig`` (per-parameter MLP, features, step scales)."""


def step_multipliers(param_info, arch: str = "mulo") -> Any:
  """Pytree of Python floats (the table in the module docstring) from ``param_info``;
  a missing ``param_info`` raises, naming the architecture ``arch`` and the fix."""
  if param_info is None:
    raise ValueError(
        f"The {arch!r} learned optimizer uses μP step multipliers and needs param_info: "
        "a pytree of tasks.ParamInfo matching the params (role "
        "input|hidden|output|bias|scalar and fan_in). Pass "
        "param_info=task.param_info(params) for a registered task, or "
        "metaopt.lopt.mulo.mlp_param_info(params, input='linear_0', output='linear_2') "
        "for your own model.")
  leaves = jax.tree_util.tree_leaves(param_info, is_leaf=lambda x: isinstance(x, ParamInfo))
  bad = [x for x in leaves if not isinstance(x, ParamInfo)]
  if bad:
    raise TypeError(f"param_info leaves must be tasks.ParamInfo, got {type(bad[0]).__name__}: "
                    f"{bad[0]!r}.")
  return jax.tree_util.tree_map(lambda i: ROLE_MULTIPLIERS[i.role](i.fan_in), param_info,
                                is_leaf=lambda x: isinstance(x, ParamInfo))


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def mlp_param_info(params, input: Sequence[str] | str, output: Sequence[str] | str):  # pylint: disable=redefined-builtin
  """μP roles for a stack of dense (or conv) layers, from explicit layer names.

  Args:
    params: the model's params pytree. Matrices are ``(fan_in, fan_out)`` (``x @ w``);
      conv kernels ``(..., in, out)`` have ``fan_in = prod(shape[:-1])``.
    input: path prefix(es) of the input layer(s), e.g. ``"linear_0"`` (paths join
      keys with ``/``: ``"linear_0/w"``).
    output: path prefix(es) of the readout layer(s).
  Returns:
    A pytree of ``ParamInfo`` like ``params``: tensors with ndim >= 2 under ``input`` /
    ``output`` get those roles and the other ones ``hidden``; 1-d tensors are
    ``bias``, 0-d ``scalar``.
  Raises:
    ValueError: if a prefix matches no matrix (catches typos).
  """
  inputs = (input,) if isinstance(input, str) else tuple(input)
  outputs = (output,) if isinstance(output, str) else tuple(output)
  used = set()

  def match(name, prefixes):
    for pre in prefixes:
      if name == pre or name.startswith(pre.rstrip("/") + "/"):
        used.add(pre)
        return True
    return False

  def info(path, p):
    shape = np.shape(p)
    if len(shape) == 0:
      return ParamInfo("scalar", 1, 1)
    if len(shape) == 1:
      return ParamInfo("bias", 1, int(shape[0]))
    name = _path_name(path)
    fan_in, fan_out = int(np.prod(shape[:-1])), int(shape[-1])
    if match(name, inputs):
      role = "input"
    elif match(name, outputs):
      role = "output"
    else:
      role = "hidden"
    return ParamInfo(role, fan_in, fan_out)

  result = jax.tree_util.tree_map_with_path(info, params)
  unused = [p for p in inputs + outputs if p not in used]
  if unused:
    names = [_path_name(path) for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if np.ndim(x) >= 2]
    raise ValueError(f"Layer prefix(es) {unused} match no matrix of the params; matrices "
                     f"are: {names}.")
  return result


@register
class MuLO(mlp.MLPLOpt):
  """The per-parameter MLP optimizer with μP step multipliers (module docstring)."""

  arch = "mulo"
  Config = MuLOConfig

  def transform(self, theta, *, num_steps: Optional[int] = None, param_info: Any = None):
    del num_steps  # horizon-free
    scales = step_multipliers(param_info)
    inner = mlp.scale_by_mlp(self.config, theta, step_scales=scales)
    expected = jax.tree_util.tree_structure(scales)

    def check(params):
      got = jax.tree_util.tree_structure(params)
      if got != expected:
        raise ValueError(f"param_info does not match the params: param_info has structure "
                         f"{expected}, params have {got}. Build param_info from these params.")

    def init_fn(params):
      check(params)
      return inner.init(params)

    def update_fn(grads, state, params=None, **extra_args):
      mlp.check_params(params, "mulo")
      check(params)
      return inner.update(grads, state, params, **extra_args)

    return type(inner)(init_fn, update_fn)
