"""Helpers shared by the task modules: in-memory datasets, batch sampling, losses.

Datasets live on device as a pytree ``{split: {field: array}}`` (images stay uint8,
a quarter of the float32 size) and are passed to ``Task.batch`` as an argument.
A batch is drawn inside jit by sampling row indices uniformly *with replacement*
from the split: cheap, stateless and deterministic per key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import SPLITS, make_normalizer

Data = Mapping[str, Mapping[str, jax.Array]]

#: A distinct integer per split, folded into keys of generated (data-free) batches so
#: that the splits of a synthetic task are different samples.
SPLIT_IDS = {split: i for i, split in enumerate(SPLITS)}

#: Activation functions selectable by name in the model tasks.
ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; known: {sorted(ACTIVATIONS)}.")
  return ACTIVATIONS[name]


@functools.lru_cache(maxsize=None)
def load_dataset(name: str) -> Dict[str, Dict[str, jax.Array]]:
  """``tasks.datasets.load(name)`` moved to the default device, cached per name.

  Every task built on the same dataset shares these arrays, so building a task (or a
  thousand sampled tasks of a family) costs no copy.
  """
  from tasks import datasets  # Imported lazily: data-free tasks must not need it.
  raw = datasets.load(name)
  missing = [s for s in SPLITS if s not in raw]
  if missing:
    raise ValueError(f"Dataset {name!r} lacks split(s) {missing}; expected {SPLITS}.")
  return {split: {k: jnp.asarray(v) for k, v in raw[split].items()} for split in SPLITS}


def sample_rows(split_data: Mapping[str, jax.Array], key: jax.Array,
                batch_size: int) -> Dict[str, jax.Array]:
  """``batch_size`` rows drawn uniformly with replacement from every field."""
  n = jax.tree_util.tree_leaves(split_data)[0].shape[0]
  idx = jax.random.randint(key, (batch_size,), 0, n)
  return {k: jnp.take(v, idx, axis=0) for k, v in split_data.items()}


#: Largest evaluation chunk (examples per compiled evaluation step).
EVAL_CHUNK = 1024


def eval_chunk_size(n: int, max_chunk: int = EVAL_CHUNK) -> int:
  """Rows per evaluation chunk for a split of ``n`` rows: all of them when
  ``n <= max_chunk``, else the largest divisor of ``n`` in ``[max_chunk/4,
  max_chunk]`` (the chunks then cover the split exactly), else ``max_chunk`` (the
  last ``n mod max_chunk`` rows are left out)."""
  if n <= max_chunk:
    return n
  for c in range(max_chunk, max_chunk // 4 - 1, -1):
    if n % c == 0:
      return c
  return max_chunk


def chunk_rows(split_data: Mapping[str, jax.Array], max_rows: Optional[int] = None,
               max_chunk: int = EVAL_CHUNK) -> Dict[str, jax.Array]:
  """The first ``max_rows`` rows (default: all) of every field, in order, reshaped to
  ``(K, chunk, ...)`` (``eval_chunk_size``): the fixed evaluation set of a split."""
  n = jax.tree_util.tree_leaves(split_data)[0].shape[0]
  if max_rows is not None:
    n = min(n, int(max_rows))
  c = eval_chunk_size(n, max_chunk)
  k = n // c
  return {f: v[:k * c].reshape((k, c) + v.shape[1:]) for f, v in split_data.items()}


def image_to_float(image: jax.Array) -> jax.Array:
  """uint8 pixels in [0, 255] -> float32 in [0, 1] (float input passes through)."""
  if jnp.issubdtype(image.dtype, jnp.integer):
    return image.astype(jnp.float32) / 255.0
  return image.astype(jnp.float32)


def features_of(example_fields: Mapping[str, jax.Array]) -> jax.Array:
  """Flat float32 features ``(B, D)`` from a dataset's ``image`` or ``x`` field."""
  if "image" in example_fields:
    img = image_to_float(example_fields["image"])
    return img.reshape(img.shape[0], -1)
  if "x" in example_fields:
    return example_fields["x"].astype(jnp.float32)
  raise ValueError(f"Dataset has neither 'image' nor 'x'; fields: {sorted(example_fields)}.")


def feature_dim(data: Data) -> int:
  fields = data["train"]
  if "image" in fields:
    return int(np.prod(fields["image"].shape[1:]))
  return int(fields["x"].shape[1])


def num_classes(data: Data) -> int:
  """Number of classes: one more than the largest label over all splits."""
  return int(max(int(jnp.max(data[s]["label"])) for s in SPLITS)) + 1


def flat_classification_batch(data: Data, key: jax.Array, split: str,
                              batch_size: int) -> Dict[str, jax.Array]:
  """``{"x": float32 (B, D), "label": int32 (B,)}`` from image (flattened, [0,1]) or x data."""
  rows = sample_rows(data[split], key, batch_size)
  return {"x": features_of(rows), "label": rows["label"].astype(jnp.int32)}


def flat_classification_eval(data: Data, split: str, max_rows: Optional[int] = None
                             ) -> Dict[str, jax.Array]:
  """The fixed evaluation set of ``split`` (``chunk_rows``) in the format of
  ``flat_classification_batch``: ``{"x": (K, chunk, D), "label": (K, chunk)}``."""
  chunks = chunk_rows(data[split], max_rows)
  k, c = chunks["label"].shape[:2]
  flat = {f: v.reshape((k * c,) + v.shape[2:]) for f, v in chunks.items()}
  return {"x": features_of(flat).reshape(k, c, -1),
          "label": chunks["label"].astype(jnp.int32)}


def image_eval(data: Data, split: str, max_rows: Optional[int] = None
               ) -> Dict[str, jax.Array]:
  """The fixed evaluation set of ``split`` as float images in [0, 1]:
  ``{"image": (K, chunk, H, W, C), "label": (K, chunk)}``."""
  chunks = chunk_rows(data[split], max_rows)
  return {"image": image_to_float(chunks["image"]),
          "label": chunks["label"].astype(jnp.int32)}


def abstract_flat_classification_batch(data: Data, batch_size: int):
  return {"x": jax.ShapeDtypeStruct((batch_size, feature_dim(data)), jnp.float32),
          "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy of ``logits (B, C)`` against integer ``labels (B,)``."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def classification_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean error rate in [0, 1] (float32) of ``logits (..., C)`` against integer
  ``labels (...)``: the fraction whose arg-max class is not the label (ties go to the
  lowest class index, as ``argmax``)."""
  wrong = jnp.argmax(logits, axis=-1) != labels
  return jnp.mean(wrong.astype(jnp.float32))


def classification_normalizer(n_classes: int) -> Callable[[jax.Array], jax.Array]:
  """Normalized loss 1 at chance (``log(num_classes)``), clipped at 1.5."""
  return make_normalizer(math.log(n_classes))


def dataset_tag(dataset: str) -> str:
  """Short dataset tag used in registry names (``fashion_mnist`` -> ``fmnist``)."""
  return {"fashion_mnist": "fmnist", "mnist_5k": "mnist5k", "text_stdlib": "text"}.get(
      dataset, dataset)


def seed_key(key: jax.Array, seed: Any) -> jax.Array:
  """Folds a (possibly traced) integer seed into ``key``; ``None`` leaves it unchanged."""
  if seed is None:
    return key
  return jax.random.fold_in(key, jnp.asarray(seed).astype(jnp.uint32))


def random_seed(key: jax.Array) -> jax.Array:
  """A uint32 seed drawn from ``key`` (for the dynamic part of a family config)."""
  return jax.random.bits(key, (), jnp.uint32)


def sample_seeds_and_scale(key: jax.Array, init_scale_range: Tuple[float, float]
                           ) -> Dict[str, jax.Array]:
  """The dynamic part shared by the model families: ``init_seed`` and ``data_seed``
  (uint32) and ``init_scale`` (float32, log-uniform on ``init_scale_range``)."""
  k1, k2, k3 = jax.random.split(key, 3)
  return {"init_seed": random_seed(k1), "data_seed": random_seed(k2),
          "init_scale": log_uniform(k3, *init_scale_range)}


def log_uniform(key: jax.Array, low: float, high: float) -> jax.Array:
  """A float32 scalar log-uniformly distributed on ``[low, high]``."""
  u = jax.random.uniform(key, (), jnp.float32)
  return jnp.exp(jnp.log(low) + u * (jnp.log(high) - jnp.log(low)))


def choice(key: jax.Array, options: Sequence[Any]) -> Any:
  """A Python value chosen uniformly from ``options`` (for static config parts)."""
  return options[int(jax.random.randint(key, (), 0, len(options)))]


def synthetic_image_data(seed: int = 0, n: int = 256, shape: Tuple[int, ...] = (8, 8, 1),
                         n_classes: int = 10) -> Dict[str, Dict[str, jax.Array]]:
  """A small learnable image dataset in the ``tasks.datasets`` layout, no files needed.

  Pixels are uniform uint8; labels are the argmax of a fixed random linear "teacher"
  on the [0, 1]-scaled, centred pixels, so a linear model can fit them. Used by tests
  and examples that must not depend on downloaded data.
  """
  rng = np.random.default_rng(seed)
  dim = int(np.prod(shape))
  teacher = rng.normal(size=(dim, n_classes))
  out = {}
  for split in SPLITS:
    image = rng.integers(0, 256, size=(n,) + tuple(shape), dtype=np.uint8)
    label = np.argmax((image.reshape(n, -1) / 255.0 - 0.5) @ teacher, axis=1)
    out[split] = {"image": jnp.asarray(image), "label": jnp.asarray(label.astype(np.int32))}
  return out


@functools.lru_cache(maxsize=None)
def teacher_mlp_data(seed: int = 0, n: int = 16384, dim: int = 32, n_classes: int = 10,
                     hidden: int = 64, label_noise: float = 0.05
                     ) -> Dict[str, Dict[str, jax.Array]]:
  """A generated classification dataset (``{split: {"x", "label"}}``) that an MLP, not
  a linear model, is needed for: ``x ~ N(0, I_dim)`` and the label is the argmax of a
  fixed random one-hidden-layer tanh "teacher" network, replaced by a uniform random
  label with probability ``label_noise``. The train split has ``n`` rows, the others
  ``n // 4`` (enough that 500 steps of batch 128 do not overfit a width-128 MLP). Used as
  meta-training data that shares nothing with the real datasets of the leaderboard.
  Cached per arguments (every teacher family of a mixture shares one copy); callers
  must not mutate the returned dict.
  """
  rng = np.random.default_rng(seed)
  w1 = rng.normal(size=(dim, hidden)) / np.sqrt(dim)
  w2 = rng.normal(size=(hidden, n_classes)) / np.sqrt(hidden)
  out = {}
  for split in SPLITS:
    rows = n if split == "train" else n // 4
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    label = np.argmax(np.tanh(2.0 * x @ w1) @ w2, axis=1)
    noisy = rng.random(rows) < label_noise
    label = np.where(noisy, rng.integers(0, n_classes, size=rows), label)
    out[split] = {"x": jnp.asarray(x), "label": jnp.asarray(label.astype(np.int32))}
  return out


# Unit-variance correction for a standard normal truncated at +-2 (as haiku/jax use).
_TRUNC_STD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class Init:
  """One parameter tensor to initialise: ``shape`` and standard deviation ``std``
  (a float or traced scalar; 0 gives zeros)."""
  shape: Tuple[int, ...]
  std: Any


def init_tree(key: jax.Array, specs) -> Any:
  """Draws a pytree of ``Init`` leaves as float32 arrays, each ~ N(0, std^2) truncated
  at +-2 std, from *one* random call sliced into pieces.

  One call instead of one per tensor: every random call compiles its own copy of
  the threefry hash, which made model inits dominate compile time.
  """
  leaves, treedef = jax.tree_util.tree_flatten(specs, is_leaf=lambda x: isinstance(x, Init))
  sizes = [int(np.prod(s.shape)) for s in leaves]
  z = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32) / _TRUNC_STD
  out, start = [], 0
  for spec, size in zip(leaves, sizes):
    out.append(z[start:start + size].reshape(spec.shape) * spec.std)
    start += size
  return jax.tree_util.tree_unflatten(treedef, out)
