"""A small decoder-only transformer language model on a byte stream (``text_stdlib``).

Model (pre-LayerNorm, GPT-2 style): token + learned position embeddings ->
``num_layers`` x [x + attn(LN(x)), x + mlp(LN(x))] -> LN -> unembedding -> logits
over ``vocab_size`` (128: ASCII). Causal multi-head attention without biases, MLP
``d -> 4d -> d`` with GELU. Loss: mean next-token cross-entropy over all ``seq_len``
positions; the normalizer divides by ``log(vocab_size)`` (chance). ``error_rate``: the
fraction of positions whose arg-max next token is not the target (next-character error).

Init (all truncated normal at 2 std, rescaled to the stated std): embeddings and
unembedding std 0.02 (GPT-2's tied-embedding scale, so the initial loss is close to
``log(vocab_size)``); other matrices variance ``1/fan_in``, the residual-output
projections (``attn/wo``, ``mlp/w2``) further scaled by ``1/sqrt(2 num_layers)`` (GPT-2);
LayerNorm scales 1, biases 0.

Batch: ``{"inputs": int32 (B, seq_len), "targets": int32 (B, seq_len)}``, windows of
``seq_len + 1`` consecutive tokens starting at uniform random offsets of the split's
stream (the uint8 stream stays on device).

``param_info``: embeddings ``input`` (fan_in = vocab size / sequence length),
attention and MLP matrices ``hidden``, unembedding ``output``, LayerNorm gains and
all biases ``bias``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from tasks import common
from tasks.base import ParamInfo, Task, TaskFamily, make_normalizer, num_params
from tasks.registry import register_family, register_task

EMBED_STD = 0.02


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape-deciding hyper-parameters (hashable: the static part of a family config)."""
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  seq_len: int = 64
  vocab_size: int = 128

  def __post_init__(self):
    if min(self.d_model, self.num_layers, self.num_heads, self.seq_len, self.vocab_size) < 1:
      raise ValueError(f"All TransformerConfig fields must be positive: {self}.")
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} must be divisible by num_heads="
                       f"{self.num_heads}.")


def _layer_norm_params(d):
  return {"scale": jnp.ones((d,), jnp.float32), "bias": jnp.zeros((d,), jnp.float32)}


def init_transformer(key: jax.Array, cfg: TransformerConfig, init_scale: Any = 1.0):
  d, v = cfg.d_model, cfg.vocab_size
  Init = common.Init

  def hidden(shape, mult=1.0):
    return Init(shape, init_scale * mult / math.sqrt(shape[0]))

  resid = 1.0 / math.sqrt(2 * cfg.num_layers)
  specs = {"embed": {"w": Init((v, d), EMBED_STD * init_scale)},
           "pos_embed": {"w": Init((cfg.seq_len, d), EMBED_STD * init_scale)},
           "unembed": {"w": Init((d, v), EMBED_STD * init_scale)}}
  for i in range(cfg.num_layers):
    specs[f"block_{i}"] = {"attn": {"wqkv": hidden((d, 3 * d)), "wo": hidden((d, d), resid)},
                           "mlp": {"w1": hidden((d, 4 * d)), "w2": hidden((4 * d, d), resid)}}
  w = common.init_tree(key, specs)
  params = {"embed": w["embed"], "pos_embed": w["pos_embed"]}
  for i in range(cfg.num_layers):
    blk = w[f"block_{i}"]
    params[f"block_{i}"] = {
        "ln1": _layer_norm_params(d),
        "attn": blk["attn"],
        "ln2": _layer_norm_params(d),
        "mlp": {"w1": blk["mlp"]["w1"], "b1": jnp.zeros((4 * d,), jnp.float32),
                "w2": blk["mlp"]["w2"], "b2": jnp.zeros((d,), jnp.float32)},
    }
  params["ln_f"] = _layer_norm_params(d)
  params["unembed"] = {"w": w["unembed"]["w"], "b": jnp.zeros((v,), jnp.float32)}
  return params


def _layer_norm(p, x, eps=1e-5):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _attention(p, x, num_heads):
  b, t, d = x.shape
  hd = d // num_heads
  q, k, v = jnp.split(x @ p["wqkv"], 3, axis=-1)
  q, k, v = (a.reshape(b, t, num_heads, hd) for a in (q, k, v))
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
  causal = jnp.tril(jnp.ones((t, t), bool))
  scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
  out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
  return out.reshape(b, t, d) @ p["wo"]


def transformer_forward(params, tokens: jax.Array, cfg: TransformerConfig) -> jax.Array:
  """Logits ``(B, T, vocab)`` for int tokens ``(B, T)`` with ``T <= seq_len``."""
  t = tokens.shape[1]
  h = params["embed"]["w"][tokens] + params["pos_embed"]["w"][:t]
  for i in range(cfg.num_layers):
    blk = params[f"block_{i}"]
    h = h + _attention(blk["attn"], _layer_norm(blk["ln1"], h), cfg.num_heads)
    m = _layer_norm(blk["ln2"], h)
    h = h + jax.nn.gelu(m @ blk["mlp"]["w1"] + blk["mlp"]["b1"]) @ blk["mlp"]["w2"] + \
        blk["mlp"]["b2"]
  h = _layer_norm(params["ln_f"], h)
  return h @ params["unembed"]["w"] + params["unembed"]["b"]


def transformer_param_info(params):
  """Roles by position in the tree (see the module docstring)."""

  def info(path, leaf):
    names = [getattr(k, "key", str(k)) for k in path]
    shape = leaf.shape
    if names[0] in ("embed", "pos_embed"):
      return ParamInfo("input", int(shape[0]), int(shape[1]))
    if names[0] == "unembed" and names[-1] == "w":
      return ParamInfo("output", int(shape[0]), int(shape[1]))
    if leaf.ndim == 2:
      return ParamInfo("hidden", int(shape[0]), int(shape[1]))
    return ParamInfo("bias", 1, int(shape[0]))

  return jax.tree_util.tree_map_with_path(info, params)


def lm_batch(tokens: jax.Array, key: jax.Array, batch_size: int, seq_len: int):
  """Random windows of ``seq_len + 1`` tokens: ``{"inputs", "targets"}`` int32 ``(B, T)``."""
  starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - seq_len)
  windows = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (seq_len + 1,)))(starts)
  windows = windows.astype(jnp.int32)
  return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


#: Windows of the fixed evaluation set of a language-model split (at most).
LM_EVAL_WINDOWS = 256


def lm_eval(tokens: jax.Array, seq_len: int, max_windows: int = LM_EVAL_WINDOWS):
  """The fixed evaluation set of a token stream: its first ``max_windows``
  non-overlapping windows of ``seq_len + 1`` tokens (every target token counted
  once), chunked for ``lax.map``: ``{"inputs", "targets"}`` int32 ``(K, chunk, T)``."""
  n = min(max_windows, (tokens.shape[0] - 1) // seq_len)
  starts = jnp.arange(n) * seq_len
  windows = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (seq_len + 1,)))(starts)
  chunks = common.chunk_rows({"w": windows.astype(jnp.int32)}, max_chunk=64)["w"]
  return {"inputs": chunks[..., :-1], "targets": chunks[..., 1:]}


def build_transformer_task(name: str, data, cfg: TransformerConfig, batch_size: int = 32,
                           init_seed: Any = None, data_seed: Any = None,
                           init_scale: Any = 1.0,
                           metadata: Optional[Dict[str, Any]] = None) -> Task:
  """A language-model Task on ``data = {split: {"tokens": uint8 (N,)}}``."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if "tokens" not in data["train"]:
    raise ValueError(f"Transformer tasks need a token stream; fields: {sorted(data['train'])}.")
  shortest = min(int(data[s]["tokens"].shape[0]) for s in data)
  if shortest <= cfg.seq_len + 1:
    raise ValueError(f"seq_len={cfg.seq_len} needs splits longer than {cfg.seq_len + 1} "
                     f"tokens; the shortest split has {shortest}.")

  def init(key):
    return init_transformer(common.seed_key(key, init_seed), cfg, init_scale)

  def loss(params, batch, key):
    del key
    logits = transformer_forward(params, batch["inputs"], cfg)
    logits = logits.reshape(-1, cfg.vocab_size)
    return common.softmax_cross_entropy(logits, batch["targets"].reshape(-1))

  def error_rate(params, batch, key):
    del key
    logits = transformer_forward(params, batch["inputs"], cfg)
    return common.classification_error(logits, batch["targets"])

  def batch(data, key, split):
    return lm_batch(data[split]["tokens"], common.seed_key(key, data_seed), batch_size,
                    cfg.seq_len)

  n = num_params(jax.eval_shape(lambda k: init_transformer(k, cfg), jax.random.PRNGKey(0)))
  spec = jax.ShapeDtypeStruct((batch_size, cfg.seq_len), jnp.int32)
  meta = {"architecture": "transformer", **dataclasses.asdict(cfg), "batch_size": batch_size,
          "num_params": n}
  meta.update(metadata or {})
  return Task(name=name, init=init, loss=loss, data=data, batch=batch,
              abstract_batch={"inputs": spec, "targets": spec},
              normalize_loss=make_normalizer(math.log(cfg.vocab_size)),
              param_info=transformer_param_info, metadata=meta, error_rate=error_rate,
              eval_batches=lambda data, split: lm_eval(data[split]["tokens"], cfg.seq_len))


def default_name(dataset: str, cfg: TransformerConfig) -> str:
  """``transformer_<data>_d<d_model>_l<layers>`` for the default heads/seq/vocab;
  otherwise ``_h<heads>_s<seq_len>`` are appended."""
  name = f"transformer_{common.dataset_tag(dataset)}_d{cfg.d_model}_l{cfg.num_layers}"
  if (cfg.num_heads, cfg.seq_len) != (4, 64):
    name += f"_h{cfg.num_heads}_s{cfg.seq_len}"
  return name


def transformer_task(dataset: str = "text_stdlib", d_model: int = 64, num_layers: int = 2,
                     num_heads: int = 4, seq_len: int = 64, batch_size: int = 32,
                     name: Optional[str] = None, data=None) -> Task:
  """A char-level LM task (see the module docstring). Batch ``32 x 64`` by default."""
  cfg = TransformerConfig(d_model, num_layers, num_heads, seq_len)
  if data is None:
    data = common.load_dataset(dataset)
  suffix = "" if batch_size == 32 else f"_b{batch_size}"
  return build_transformer_task(name or default_name(dataset, cfg) + suffix, data, cfg,
                                batch_size, metadata={"dataset": dataset})


def transformer_family(dataset: str = "text_stdlib", d_models: Sequence[int] = (32, 64),
                       layer_choices: Sequence[int] = (1, 2), num_heads: int = 4,
                       seq_len: int = 64, batch_size: int = 32,
                       init_scale_range: Tuple[float, float] = (0.5, 2.0),
                       name: Optional[str] = None, data=None) -> TaskFamily:
  """Static: ``d_model`` and ``num_layers`` sampled from the choices. Dynamic:
  ``init_seed``, ``data_seed`` (uint32), ``init_scale`` (log-uniform)."""
  if data is None:
    data = common.load_dataset(dataset)
  name = name or f"transformer_{common.dataset_tag(dataset)}_family"
  lo, hi = init_scale_range

  def sample_static(key):
    k1, k2 = jax.random.split(key)
    return TransformerConfig(int(common.choice(k1, tuple(d_models))),
                             int(common.choice(k2, tuple(layer_choices))), num_heads, seq_len)

  def sample_dynamic(key, static):
    del static
    k1, k2, k3 = jax.random.split(key, 3)
    return {"init_seed": common.random_seed(k1), "data_seed": common.random_seed(k2),
            "init_scale": common.log_uniform(k3, lo, hi)}

  def make_task(cfg, dynamic):
    return build_transformer_task(f"{name}/{default_name(dataset, cfg)}", data, cfg,
                                  batch_size, dynamic["init_seed"], dynamic["data_seed"],
                                  dynamic["init_scale"], {"dataset": dataset, "family": name})

  return TaskFamily(name, sample_static, sample_dynamic, make_task,
                    {"architecture": "transformer", "dataset": dataset,
                     "d_models": tuple(d_models),
                     "layer_choices": tuple(layer_choices), "num_heads": num_heads,
                     "seq_len": seq_len, "batch_size": batch_size,
                     "init_scale_range": (lo, hi)})


register_task("transformer_text_d64_l2", lambda: transformer_task("text_stdlib", 64, 2))
register_task("transformer_text_d128_l4", lambda: transformer_task("text_stdlib", 128, 4))
register_family("transformer_text_family", lambda: transformer_family("text_stdlib"))
# Small enough to meta-train on a CPU: one layer, d_model 32, 32-token windows.
register_family("transformer_text_tiny_family", lambda: transformer_family(
    "text_stdlib", d_models=(32,), layer_choices=(1,), seq_len=32, batch_size=16,
    name="transformer_text_tiny_family"))
# Leaderboard v3's language model: a 0.43M-parameter char-level transformer on the
# fortunes corpus (sealed: meta-training never reads it), 4 x 32-token batches (sized
# so that the whole board fits a 2-core CPU).
register_task("transformer_fortunes_d128_l2_s32_b4", lambda: transformer_task(
    "fortunes", 128, 2, seq_len=32, batch_size=4, name="transformer_fortunes_d128_l2_s32_b4"))
