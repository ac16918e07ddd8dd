"""Multi-layer perceptron classification tasks, in standard or μP parametrization.

Model: ``x (B, D) -> [dense -> activation] * depth -> dense -> logits (B, C)``, with
images flattened and scaled to [0, 1] inside ``Task.batch`` (the data stays uint8 on
device). Loss: mean softmax cross-entropy; ``error_rate``: fraction of
mis-classified examples. Params are a dict
``{"linear_0": {"w": (D, h0), "b": (h0,)}, ..., "linear_<depth>": {"w": (h_last, C),
"b": (C,)}}``.

Parametrizations (``parametrization=``):

* ``"standard"``: every weight ~ truncated normal with variance ``1/fan_in``
  (haiku's default ``Linear`` init), biases zero, logits ``h @ w + b``.
* ``"mup"``: the μLO recipe (Thérien et al. 2024, after Yang et al.'s μP):
  input and hidden weights ~ truncated normal with variance ``1/fan_in`` (fan-in μP
  init), **zero-initialized readout** (``w`` and ``b`` of the last layer), and an
  output multiplier ``1/width`` on the readout matmul only:
  ``logits = (h @ w_out) / width + b_out`` with ``width = h_last`` (the readout's
  fan-in). The per-layer learning-rate multipliers of μP (1 for ``input`` and
  ``output``, ``1/fan_in`` for ``hidden``) are the optimizer's business: this
  module declares the roles and fan-ins through ``Task.param_info``.

``param_info`` roles: first matrix ``input`` (fan_in = data dimension), hidden-to-
hidden matrices ``hidden``, last matrix ``output`` (fan_out = number of classes),
every bias ``bias``.

Per-layer activations (for μP coordinate checks): ``mlp_forward(...,
return_activations=True)`` or ``activations_fn(task)(params, batch)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from tasks import augment, common
from tasks.base import SYNTHETIC, ParamInfo, Task, TaskFamily, num_params
from tasks.registry import register_family, register_task

PARAMETRIZATIONS = ("standard", "mup")


def _layer_name(i: int) -> str:
  return f"linear_{i}"


def _check_config(hidden: Sequence[int], parametrization: str, batch_size: int) -> None:
  if parametrization not in PARAMETRIZATIONS:
    raise ValueError(
        f"Unknown parametrization {parametrization!r}; expected one of {PARAMETRIZATIONS}.")
  if len(hidden) < 1 or any(int(h) < 1 for h in hidden):
    raise ValueError(
        f"hidden={tuple(hidden)!r} must list at least one positive width; for a model "
        "without hidden layers use tasks.logistic.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")


def output_multiplier(hidden: Sequence[int], parametrization: str) -> float:
  """The readout multiplier: ``1/width`` under μP, 1 otherwise."""
  return 1.0 / hidden[-1] if parametrization == "mup" else 1.0


def init_mlp(key: jax.Array, sizes: Sequence[int], parametrization: str = "standard",
             init_scale: Any = 1.0) -> Dict[str, Dict[str, jax.Array]]:
  """MLP params for layer sizes ``(D, h0, ..., C)``.

  ``init_scale`` (may be traced) multiplies every non-zero weight's init.
  """
  last = len(sizes) - 2
  specs = {_layer_name(i): common.Init((n_in, n_out), init_scale / math.sqrt(n_in))
           for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
           if not (parametrization == "mup" and i == last)}
  weights = common.init_tree(key, specs)
  params = {}
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    name = _layer_name(i)
    w = weights[name] if name in weights else jnp.zeros((n_in, n_out), jnp.float32)
    params[name] = {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}
  return params


def mlp_forward(params, x: jax.Array, activation: str = "relu", out_multiplier: float = 1.0,
                return_activations: bool = False):
  """Logits ``(B, C)`` of the MLP on features ``x (B, D)``.

  With ``return_activations=True`` returns ``(logits, acts)`` where ``acts`` maps
  ``"linear_i"`` to the post-activation output ``(B, h_i)`` of hidden layer ``i`` and
  ``"logits"`` to the logits.
  """
  act = common.get_activation(activation)
  depth = len(params) - 1
  acts = {}
  h = x
  for i in range(depth):
    layer = params[_layer_name(i)]
    h = act(h @ layer["w"] + layer["b"])
    acts[_layer_name(i)] = h
  out = params[_layer_name(depth)]
  logits = (h @ out["w"]) * out_multiplier + out["b"]
  if return_activations:
    acts["logits"] = logits
    return logits, acts
  return logits


def mlp_param_info(params) -> Dict[str, Dict[str, ParamInfo]]:
  """μP roles of an MLP params dict (see the module docstring)."""
  depth = len(params) - 1
  info = {}
  for i in range(depth + 1):
    n_in, n_out = params[_layer_name(i)]["w"].shape
    role = "input" if i == 0 else ("output" if i == depth else "hidden")
    info[_layer_name(i)] = {"w": ParamInfo(role, int(n_in), int(n_out)),
                            "b": ParamInfo("bias", 1, int(n_out))}
  return info


def build_mlp_task(name: str, data, hidden: Sequence[int], activation: str = "relu",
                   batch_size: int = 128, parametrization: str = "standard",
                   init_seed: Any = None, data_seed: Any = None, init_scale: Any = 1.0,
                   metadata: Optional[Dict[str, Any]] = None,
                   n_classes: Optional[int] = None) -> Task:
  """An MLP Task on an in-memory classification dataset ``{split: {image|x, label}}``.

  ``init_seed`` / ``data_seed`` (ints or traced uint32, or None) are folded into the
  keys given to ``init`` / ``batch``, so that tasks of a family differ in init and
  data order while the caller passes the same keys. ``init_scale`` multiplies the
  (non-zero) initial weights. ``n_classes`` defaults to ``max(label) + 1``.
  """
  hidden = tuple(int(h) for h in hidden)
  _check_config(hidden, parametrization, batch_size)
  common.get_activation(activation)  # Fails early on an unknown name.
  n_classes = n_classes or common.num_classes(data)
  sizes = (common.feature_dim(data),) + hidden + (n_classes,)
  mult = output_multiplier(hidden, parametrization)

  def init(key):
    return init_mlp(common.seed_key(key, init_seed), sizes, parametrization, init_scale)

  def loss(params, batch, key):
    del key  # Deterministic model.
    logits = mlp_forward(params, batch["x"], activation, mult)
    return common.softmax_cross_entropy(logits, batch["label"])

  def error_rate(params, batch, key):
    del key
    logits = mlp_forward(params, batch["x"], activation, mult)
    return common.classification_error(logits, batch["label"])

  def batch(data, key, split):
    return common.flat_classification_batch(data, common.seed_key(key, data_seed), split,
                                            batch_size)

  n = num_params(jax.eval_shape(lambda k: init_mlp(k, sizes, parametrization),
                                jax.random.PRNGKey(0)))
  meta = {"architecture": "mlp", "hidden": hidden, "activation": activation,
          "parametrization": parametrization, "output_multiplier": mult,
          "batch_size": batch_size, "num_classes": n_classes, "num_params": n}
  meta.update(metadata or {})
  return Task(name=name, init=init, loss=loss, data=data, batch=batch,
              abstract_batch=common.abstract_flat_classification_batch(data, batch_size),
              normalize_loss=common.classification_normalizer(n_classes),
              param_info=mlp_param_info, metadata=meta, error_rate=error_rate,
              eval_batches=common.flat_classification_eval)


def default_name(dataset: str, hidden: Sequence[int], parametrization: str) -> str:
  """``mlp_<data>_w<width>_d<depth>[_mup]`` (width given when all layers share it)."""
  hidden = tuple(hidden)
  width = str(hidden[0]) if len(set(hidden)) == 1 else "-".join(map(str, hidden))
  suffix = "_mup" if parametrization == "mup" else ""
  return f"mlp_{common.dataset_tag(dataset)}_w{width}_d{len(hidden)}{suffix}"


def mlp_task(dataset: str = "digits", hidden: Sequence[int] = (32, 32), activation: str = "relu",
             batch_size: int = 128, parametrization: str = "standard",
             name: Optional[str] = None, data=None) -> Task:
  """An MLP classification task on ``dataset`` (see the module docstring).

  Args:
    dataset: a ``tasks.datasets`` name (``digits``, ``mnist_5k``, ``fashion_mnist``,
      ``mnist1d``).
    hidden: hidden-layer widths; ``depth = len(hidden)``.
    activation: ``relu``, ``tanh``, ``gelu`` or ``silu``.
    batch_size: examples per batch.
    parametrization: ``"standard"`` or ``"mup"``.
    name: task name (default ``default_name(...)``).
    data: an already-loaded dataset pytree; overrides ``dataset`` loading.
  """
  if data is None:
    data = common.load_dataset(dataset)
  name = name or default_name(dataset, hidden, parametrization)
  return build_mlp_task(name, data, hidden, activation, batch_size, parametrization,
                        metadata={"dataset": dataset})


def activations_fn(task: Task):
  """``(params, batch) -> {layer: activations}`` for an MLP task (μP coordinate checks)."""
  if task.metadata.get("architecture") != "mlp":
    raise ValueError(f"Task {task.name!r} is not an MLP task (metadata {dict(task.metadata)}).")
  act, mult = task.metadata["activation"], task.metadata["output_multiplier"]

  def fn(params, batch):
    return mlp_forward(params, batch["x"], act, mult, return_activations=True)[1]

  return fn


@dataclasses.dataclass(frozen=True)
class MLPStatic:
  """Static (shape-deciding) part of an MLP family config."""
  hidden: Tuple[int, ...]
  activation: str


def mlp_family(dataset: str = "digits", widths: Sequence[int] = (32, 64, 128),
               depths: Sequence[int] = (1, 2, 3),
               activations: Sequence[str] = ("relu", "tanh", "gelu"),
               batch_size: int = 128, parametrization: str = "standard",
               init_scale_range: Tuple[float, float] = (0.5, 2.0),
               name: Optional[str] = None, data=None) -> TaskFamily:
  """A family of MLP tasks on one dataset.

  Static (per ``sample_batch``): a width from ``widths`` shared by ``depth`` hidden
  layers, ``depth`` from ``depths``, an activation from ``activations``.
  Dynamic (per task, vmappable): ``init_seed`` and ``data_seed`` (uint32) and
  ``init_scale`` (float32, log-uniform on ``init_scale_range``).
  """
  for a in activations:
    common.get_activation(a)
  if data is None:
    data = common.load_dataset(dataset)
  name = name or f"mlp_{common.dataset_tag(dataset)}_family"
  n_classes = common.num_classes(data)
  lo, hi = init_scale_range

  def sample_static(key):
    k1, k2, k3 = jax.random.split(key, 3)
    width, depth = common.choice(k1, tuple(widths)), common.choice(k2, tuple(depths))
    return MLPStatic((int(width),) * int(depth), common.choice(k3, tuple(activations)))

  def sample_dynamic(key, static):
    del static
    return common.sample_seeds_and_scale(key, (lo, hi))

  def make_task(static, dynamic):
    base = default_name(dataset, static.hidden, parametrization)
    task_name = f"{name}/{base}_{static.activation}"
    return build_mlp_task(task_name, data, static.hidden, static.activation, batch_size,
                          parametrization, init_seed=dynamic["init_seed"],
                          data_seed=dynamic["data_seed"], init_scale=dynamic["init_scale"],
                          metadata={"dataset": dataset, "family": name}, n_classes=n_classes)

  meta = {"architecture": "mlp", "dataset": dataset, "widths": tuple(widths),
          "depths": tuple(depths),
          "activations": tuple(activations), "parametrization": parametrization,
          "init_scale_range": (lo, hi), "batch_size": batch_size}
  return TaskFamily(name, sample_static, sample_dynamic, make_task, meta)


# Registry. Names: mlp_<dataset>_w<width>_d<depth>[_mup]; see tasks/__init__.py.
_REGISTERED = [
    ("digits", (32, 32), "standard"),
    ("digits", (128, 128), "standard"),
    ("mnist_5k", (128, 128), "standard"),
    ("fashion_mnist", (128, 128), "standard"),
    ("mnist1d", (128, 128), "standard"),
    ("digits", (128, 128), "mup"),
    ("fashion_mnist", (128, 128), "mup"),
    # Leaderboard v2 held-out shapes: 4x wider than any meta-training MLP (<= 128), and
    # deeper on MNIST-1D (run with long horizons).
    ("fashion_mnist", (512, 512), "standard"),
    ("mnist1d", (64, 64, 64), "standard"),
]

for _ds, _hidden, _par in _REGISTERED:
  register_task(default_name(_ds, _hidden, _par),
                lambda ds=_ds, h=_hidden, p=_par: mlp_task(ds, h, parametrization=p))

register_family("mlp_digits_family", lambda: mlp_family("digits"))
register_family("mlp_digits_w32_d2_family", lambda: mlp_family(
    "digits", widths=(32,), depths=(2,), activations=("relu",), init_scale_range=(1.0, 1.0),
    name="mlp_digits_w32_d2_family"))
register_family("mlp_digits_mup_family", lambda: mlp_family(
    "digits", widths=(32, 64, 128, 256), depths=(2,), activations=("relu",),
    parametrization="mup", init_scale_range=(1.0, 1.0), name="mlp_digits_mup_family"))
# Generated data (dataset "synthetic"): meta-training MLPs that share no dataset with
# any leaderboard task. Widths 32-128, depth 2 (width fixed per family: a run samples one
# static config per member family, so a mixture lists the shapes it wants).
# ``+reparam_global``: the same with VeLO/Celo2's global reparameterization (the loss
# sees ``c * p`` with ``c`` log-uniform in [1e-2, 1e2] per task), so a learned step size
# must adapt to the parameters' scale. ``_mup`` families use μP (for ``mup`` optimizers).
def _teacher_family(width: int, parametrization: str = "standard") -> TaskFamily:
  tag = "_mup" if parametrization == "mup" else ""
  return mlp_family(SYNTHETIC, widths=(width,), depths=(2,),
                    activations=("relu", "tanh", "gelu"), parametrization=parametrization,
                    name=f"mlp_teacher{tag}_w{width}_family", data=common.teacher_mlp_data())


for _w in (32, 64, 128):
  register_family(f"mlp_teacher_w{_w}_family", lambda w=_w: _teacher_family(w))
  register_family(f"mlp_teacher_w{_w}_family+reparam_global",
                  lambda w=_w: augment.reparameterize(_teacher_family(w), "global", (1e-2, 1e2)))
  register_family(f"mlp_teacher_mup_w{_w}_family", lambda w=_w: _teacher_family(w, "mup"))
# Small tabular data where overfitting decides the final validation loss (v3).
register_task("mlp_breast_cancer_w256_d2", lambda: mlp_task(
    "breast_cancer", (256, 256), batch_size=32, name="mlp_breast_cancer_w256_d2"))
register_task("mlp_wine_w64_d2", lambda: mlp_task("wine", (64, 64), batch_size=16,
                                                   name="mlp_wine_w64_d2"))
# A deeper tanh MLP (v3).
register_task("mlp_fmnist_w256_d3_tanh", lambda: mlp_task(
    "fashion_mnist", (256, 256, 256), activation="tanh", name="mlp_fmnist_w256_d3_tanh"))
# A small MLP for long runs (v3: 3,000 steps).
register_task("mlp_fmnist_w64_d1_b64", lambda: mlp_task(
    "fashion_mnist", (64,), batch_size=64, name="mlp_fmnist_w64_d1_b64"))
