"""A residual conv net with BatchNorm: the task kind with model state.

Model (NHWC, images scaled to [0, 1]):
``conv3x3(stride 2) -> BN -> relu``, then per stage ``s`` with ``channels[s]``: a
projection ``conv3x3(stride 2 for s > 0) -> BN -> relu`` and ``blocks`` residual
blocks ``h + BN(conv3x3(relu(BN(conv3x3(h)))))`` followed by relu; global average
pooling; dense readout to the classes.

BatchNorm normalizes with the batch statistics in training and with running
averages (``momentum`` 0.9, as Flax's default) in evaluation; the running averages
are the task's **model state** (``Task.init_state`` / ``Task.loss_with_state``),
carried by ``metaopt.inner`` beside the parameters and never seen by the optimizer.
BN scale ``gamma`` starts at 1 and shift ``beta`` at 0; convolutions use He
(fan-in) initialization and no bias (BN has the shift).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import jax
import jax.numpy as jnp

from tasks import common
from tasks.base import ParamInfo, Task, num_params
from tasks.registry import register_task

BN_MOMENTUM = 0.9
BN_EPS = 1e-5


def _conv_names(channels: Sequence[int], blocks: int):
  """``(name, c_in, c_out, stride)`` of every conv, in forward order."""
  out = [("stem", None, channels[0], 2)]
  c = channels[0]
  for s, width in enumerate(channels):
    out.append((f"s{s}_proj", c, width, 1 if s == 0 else 2))
    for b in range(blocks):
      out += [(f"s{s}_b{b}_conv0", width, width, 1), (f"s{s}_b{b}_conv1", width, width, 1)]
    c = width
  return out


def init_resnet(key: jax.Array, in_channels: int, channels: Sequence[int], blocks: int,
                n_classes: int) -> Dict[str, Any]:
  convs = _conv_names(channels, blocks)
  specs = {}
  for name, c_in, c_out, _ in convs:
    c_in = in_channels if c_in is None else c_in
    specs[name] = common.Init((3, 3, c_in, c_out), math.sqrt(2.0 / (9 * c_in)))
  specs["head"] = common.Init((channels[-1], n_classes), 1.0 / math.sqrt(channels[-1]))
  w = common.init_tree(key, specs)
  params = {name: {"w": w[name], "gamma": jnp.ones((c_out,), jnp.float32),
                   "beta": jnp.zeros((c_out,), jnp.float32)} for name, _, c_out, _ in convs}
  params["head"] = {"w": w["head"], "b": jnp.zeros((n_classes,), jnp.float32)}
  return params


def init_bn_state(channels: Sequence[int], blocks: int) -> Dict[str, Any]:
  return {name: {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
          for name, _, c, _ in _conv_names(channels, blocks)}


def _conv(x, w, stride):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def resnet_forward(params, state, images, channels: Sequence[int], blocks: int,
                   training: bool):
  """``-> (logits (B, C), new_state)``; the state is unchanged when not training."""
  new_state = {}

  def conv_bn(name, x, stride):
    y = _conv(x, params[name]["w"], stride)
    if training:
      mean, var = jnp.mean(y, axis=(0, 1, 2)), jnp.var(y, axis=(0, 1, 2))
      old = state[name]
      new_state[name] = {
          "mean": BN_MOMENTUM * old["mean"] + (1 - BN_MOMENTUM) * jax.lax.stop_gradient(mean),
          "var": BN_MOMENTUM * old["var"] + (1 - BN_MOMENTUM) * jax.lax.stop_gradient(var)}
    else:
      mean, var = state[name]["mean"], state[name]["var"]
      new_state[name] = state[name]
    y = (y - mean) * jax.lax.rsqrt(var + BN_EPS)
    return y * params[name]["gamma"] + params[name]["beta"]

  h = jax.nn.relu(conv_bn("stem", images, 2))
  for s in range(len(channels)):
    h = jax.nn.relu(conv_bn(f"s{s}_proj", h, 1 if s == 0 else 2))
    for b in range(blocks):
      r = jax.nn.relu(conv_bn(f"s{s}_b{b}_conv0", h, 1))
      h = jax.nn.relu(h + conv_bn(f"s{s}_b{b}_conv1", r, 1))
  pooled = jnp.mean(h, axis=(1, 2))
  return pooled @ params["head"]["w"] + params["head"]["b"], new_state


def resnet_param_info(params):
  """Conv kernels ``hidden`` (the stem ``input``), BN gains/shifts ``bias``, the
  readout ``output``."""

  def info(path, leaf):
    names = [getattr(k, "key", str(k)) for k in path]
    if names[0] == "head":
      return (ParamInfo("output", int(leaf.shape[0]), int(leaf.shape[1])) if leaf.ndim == 2
              else ParamInfo("bias", 1, int(leaf.shape[0])))
    if leaf.ndim == 4:
      fan_in = int(leaf.shape[0] * leaf.shape[1] * leaf.shape[2])
      return ParamInfo("input" if names[0] == "stem" else "hidden", fan_in, int(leaf.shape[3]))
    return ParamInfo("bias", 1, int(leaf.shape[0]))

  return jax.tree_util.tree_map_with_path(info, params)


def resnet_task(dataset: str = "fashion_mnist", channels: Sequence[int] = (8, 16),
                blocks: int = 1, batch_size: int = 64, name: str = None, data=None,
                eval_rows: int = None) -> Task:
  """A residual BN conv net classifier on an image dataset (see module docstring);
  its evaluation set is the first ``eval_rows`` rows of a split (default all)."""
  channels = tuple(int(c) for c in channels)
  if not channels or min(channels) < 1 or blocks < 0 or batch_size < 1:
    raise ValueError(f"resnet_task: channels={channels}, blocks={blocks}, "
                     f"batch_size={batch_size} must be positive.")
  if data is None:
    data = common.load_dataset(dataset)
  image_shape = tuple(int(s) for s in data["train"]["image"].shape[1:])
  n_classes = common.num_classes(data)

  def init(key):
    return init_resnet(key, image_shape[-1], channels, blocks, n_classes)

  def init_state(key):
    del key
    return init_bn_state(channels, blocks)

  def loss_with_state(params, state, batch, key, training):
    del key
    logits, new_state = resnet_forward(params, state, batch["image"], channels, blocks,
                                       training)
    return common.softmax_cross_entropy(logits, batch["label"]), new_state

  def loss(params, batch, key):
    return loss_with_state(params, init_state(None), batch, key, True)[0]

  def error_rate(params, batch, key, state=None):
    del key
    logits, _ = resnet_forward(params, init_state(None) if state is None else state,
                               batch["image"], channels, blocks, state is None)
    return common.classification_error(logits, batch["label"])

  def batch(data, key, split):
    rows = common.sample_rows(data[split], key, batch_size)
    return {"image": common.image_to_float(rows["image"]), "label": rows["label"]}

  n = num_params(jax.eval_shape(init, jax.random.PRNGKey(0)))
  name = name or (f"resnet_bn_{common.dataset_tag(dataset)}_c{'-'.join(map(str, channels))}"
                  f"_b{blocks}")
  return Task(
      name=name, init=init, loss=loss, data=data, batch=batch,
      abstract_batch={"image": jax.ShapeDtypeStruct((batch_size,) + image_shape, jnp.float32),
                      "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)},
      normalize_loss=common.classification_normalizer(n_classes),
      param_info=resnet_param_info, error_rate=error_rate,
      eval_batches=lambda data, split: common.image_eval(data, split, eval_rows),
      init_state=init_state, loss_with_state=loss_with_state,
      metadata={"architecture": "conv", "dataset": dataset, "channels": channels,
                "blocks": blocks, "batch_norm": True, "batch_size": batch_size,
                "num_classes": n_classes, "num_params": n})


# Leaderboard v3's BatchNorm net: batch 16, validation on the first 1,024 rows (sized
# so that the whole board fits a 2-core CPU).
register_task("resnet_bn_fmnist_c8-16_b1", lambda: resnet_task(
    "fashion_mnist", (8, 16), 1, batch_size=16, eval_rows=1024))
