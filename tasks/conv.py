"""Small convolutional classifiers on image datasets.

Model: ``image (B, H, W, C) -> [conv 3x3, stride 2, SAME -> activation] * depth ->
flatten -> dense -> logits (B, classes)``. Stride-2 convolutions instead of pooling
keep the net cheap on CPU (28x28 -> 14x14 -> 7x7); the flattened readout (rather than
a global mean) keeps the spatial layout, so the net trains quickly. Images are scaled to
[0, 1] float32 inside ``Task.batch`` (the data stays uint8). Loss: mean softmax
cross-entropy; ``error_rate``: fraction of mis-classified examples.

Params: ``{"conv_i": {"w": (3, 3, c_in, c_out), "b": (c_out,)}, "readout": {"w":
(h_out * w_out * c_last, classes), "b": (classes,)}}``; weights truncated normal with variance
``1/fan_in`` (``fan_in = 9 c_in`` for convs), biases zero. ``param_info``: ``conv_0``
is ``input`` (fan_in ``9 C``), later convs ``hidden``, readout ``output``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from tasks import common
from tasks.base import ParamInfo, Task, TaskFamily, num_params
from tasks.registry import register_family, register_task

KERNEL = 3


def output_hw(image_shape: Sequence[int], depth: int) -> Tuple[int, int]:
  """Spatial size after ``depth`` stride-2 SAME convolutions (ceil-halving)."""
  h, w = int(image_shape[0]), int(image_shape[1])
  for _ in range(depth):
    h, w = -(-h // 2), -(-w // 2)
  return h, w


def init_conv(key: jax.Array, image_shape: Sequence[int], channels: Sequence[int],
              n_classes: int, init_scale: Any = 1.0) -> Dict[str, Dict[str, jax.Array]]:
  """Params for images of shape ``(H, W, C)``."""
  c_ins = (int(image_shape[-1]),) + tuple(channels[:-1])
  specs = {f"conv_{i}": common.Init((KERNEL, KERNEL, c_in, c),
                                    init_scale / math.sqrt(KERNEL * KERNEL * c_in))
           for i, (c_in, c) in enumerate(zip(c_ins, channels))}
  h, w = output_hw(image_shape, len(channels))
  fan_in = h * w * channels[-1]
  specs["readout"] = common.Init((fan_in, n_classes), init_scale / math.sqrt(fan_in))
  weights = common.init_tree(key, specs)
  return {name: {"w": w, "b": jnp.zeros((w.shape[-1],), jnp.float32)}
          for name, w in weights.items()}


def conv_forward(params, image: jax.Array, activation: str = "relu") -> jax.Array:
  """Logits ``(B, classes)`` for float images ``(B, H, W, C)``."""
  act = common.get_activation(activation)
  depth = len(params) - 1
  h = image
  for i in range(depth):
    layer = params[f"conv_{i}"]
    h = jax.lax.conv_general_dilated(h, layer["w"], window_strides=(2, 2), padding="SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = act(h + layer["b"])
  h = h.reshape(h.shape[0], -1)
  return h @ params["readout"]["w"] + params["readout"]["b"]


def conv_param_info(params):
  depth = len(params) - 1
  info = {}
  for i in range(depth):
    kh, kw, c_in, c_out = params[f"conv_{i}"]["w"].shape
    info[f"conv_{i}"] = {"w": ParamInfo("input" if i == 0 else "hidden", int(kh * kw * c_in),
                                        int(c_out)),
                         "b": ParamInfo("bias", 1, int(c_out))}
  fan_in, n_classes = params["readout"]["w"].shape
  info["readout"] = {"w": ParamInfo("output", int(fan_in), int(n_classes)),
                     "b": ParamInfo("bias", 1, int(n_classes))}
  return info


def build_conv_task(name: str, data, channels: Sequence[int], activation: str = "relu",
                    batch_size: int = 128, init_seed: Any = None, data_seed: Any = None,
                    init_scale: Any = 1.0, n_classes: Optional[int] = None,
                    metadata: Optional[Dict[str, Any]] = None) -> Task:
  """A conv-net Task on ``data`` = ``{split: {"image": uint8 (N,H,W,C), "label"}}``."""
  channels = tuple(int(c) for c in channels)
  if not channels or min(channels) < 1:
    raise ValueError(f"channels={channels!r} must list at least one positive channel count.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if "image" not in data["train"]:
    raise ValueError(f"Conv tasks need image data; fields: {sorted(data['train'])}.")
  common.get_activation(activation)
  image_shape = tuple(int(s) for s in data["train"]["image"].shape[1:])
  n_classes = n_classes or common.num_classes(data)

  def init(key):
    return init_conv(common.seed_key(key, init_seed), image_shape, channels, n_classes,
                     init_scale)

  def loss(params, batch, key):
    del key
    return common.softmax_cross_entropy(conv_forward(params, batch["image"], activation),
                                        batch["label"])

  def error_rate(params, batch, key):
    del key
    return common.classification_error(conv_forward(params, batch["image"], activation),
                                       batch["label"])

  def batch(data, key, split):
    rows = common.sample_rows(data[split], common.seed_key(key, data_seed), batch_size)
    return {"image": common.image_to_float(rows["image"]), "label": rows["label"]}

  n = num_params(jax.eval_shape(
      lambda k: init_conv(k, image_shape, channels, n_classes), jax.random.PRNGKey(0)))
  meta = {"architecture": "conv", "channels": channels, "activation": activation,
          "batch_size": batch_size, "num_classes": n_classes, "num_params": n}
  meta.update(metadata or {})
  return Task(
      name=name, init=init, loss=loss, data=data, batch=batch,
      abstract_batch={"image": jax.ShapeDtypeStruct((batch_size,) + image_shape, jnp.float32),
                      "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)},
      normalize_loss=common.classification_normalizer(n_classes),
      param_info=conv_param_info, metadata=meta, error_rate=error_rate,
      eval_batches=common.image_eval)


def default_name(dataset: str, channels: Sequence[int]) -> str:
  """``conv_<data>_c<channels>x<depth>`` (channels joined by ``-`` when they differ)."""
  channels = tuple(channels)
  c = str(channels[0]) if len(set(channels)) == 1 else "-".join(map(str, channels))
  return f"conv_{common.dataset_tag(dataset)}_c{c}x{len(channels)}"


def conv_task(dataset: str = "digits", channels: Sequence[int] = (8, 8),
              activation: str = "relu", batch_size: int = 128, name: Optional[str] = None,
              data=None) -> Task:
  """A conv-net classification task on an image dataset (see the module docstring)."""
  if data is None:
    data = common.load_dataset(dataset)
  return build_conv_task(name or default_name(dataset, channels), data, channels, activation,
                         batch_size, metadata={"dataset": dataset})


@dataclasses.dataclass(frozen=True)
class ConvStatic:
  channels: Tuple[int, ...]


def conv_family(dataset: str = "digits", channel_choices: Sequence[int] = (8, 16, 32),
                depth: int = 2, batch_size: int = 128,
                init_scale_range: Tuple[float, float] = (0.5, 2.0),
                name: Optional[str] = None, data=None) -> TaskFamily:
  """Static: a channel count from ``channel_choices`` for all ``depth`` layers.
  Dynamic: ``init_seed``, ``data_seed`` (uint32), ``init_scale`` (log-uniform)."""
  if data is None:
    data = common.load_dataset(dataset)
  name = name or f"conv_{common.dataset_tag(dataset)}_family"
  n_classes = common.num_classes(data)
  lo, hi = init_scale_range

  def sample_static(key):
    return ConvStatic((int(common.choice(key, tuple(channel_choices))),) * depth)

  def sample_dynamic(key, static):
    del static
    return common.sample_seeds_and_scale(key, (lo, hi))

  def make_task(static, dynamic):
    return build_conv_task(f"{name}/{default_name(dataset, static.channels)}", data,
                           static.channels, "relu", batch_size, dynamic["init_seed"],
                           dynamic["data_seed"], dynamic["init_scale"], n_classes,
                           metadata={"dataset": dataset, "family": name})

  return TaskFamily(name, sample_static, sample_dynamic, make_task,
                    {"architecture": "conv", "dataset": dataset,
                     "channel_choices": tuple(channel_choices),
                     "depth": depth, "init_scale_range": (lo, hi), "batch_size": batch_size})


for _ds, _ch in [("digits", (8, 8)), ("mnist_5k", (16, 16)), ("fashion_mnist", (16, 16))]:
  register_task(default_name(_ds, _ch), lambda ds=_ds, ch=_ch: conv_task(ds, ch))
register_family("conv_digits_family", lambda: conv_family("digits"))
