"""Per-step cost of every learned optimizer relative to optax.adam (not a test).

One training step = forward + backward + optimizer update, jitted (params and state
donated), batch 128, on a ~1.07M-parameter MLP 784-1024-256-10 with synthetic data.
For every registered architecture (``metaopt.lopt.arch_names()``, default config,
theta from ``init_meta_params(PRNGKey(0))``, horizon-free) it prints, measured side
by side in one run (repetitions interleaved across optimizers, median per step):

* ``time/adam``: step time divided by the optax.adam step time;
* ``bound``: the arithmetic lower bound of that ratio,
  ``(model + optimizer FLOPs per param) / (model + adam FLOPs per param)`` with
  model = 6 x batch FLOPs per parameter (forward + backward) and optimizer FLOPs from
  the architecture config (``flops_per_param()``), or, where an architecture does
  not declare it, from XLA's cost analysis of its update (marked ``*``);
* ``time/bound``: how far the implementation is from that bound (target <= 1.3);
* ``state/adam``: bytes of optimizer-state leaves relative to adam's.

``--pretrained general-v1,general-v2`` adds shipped optimizers (their own config and
trained theta) beside the architectures.

Usage: ``python benchmarks/lopt_step.py [--reps 7] [--steps 5] [--archs mlp,adam]
[--pretrained NAMES]`` (``--archs none``: only the pretrained ones).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import lopt
from metaopt.lopt import io, mulo

SIZES = (784, 1024, 256, 10)
BATCH = 128
ADAM_FLOPS = 12  # per parameter: two EMAs, bias corrections, sqrt, divide


def init_model(key):
  params = {}
  for i, (k, a, b) in enumerate(zip(jax.random.split(key, len(SIZES) - 1), SIZES[:-1], SIZES[1:])):
    params[f"linear_{i}"] = {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros((b,))}
  return params


def loss_fn(params, x, y):
  h = x
  n = len(params)
  for i in range(n):
    h = h @ params[f"linear_{i}"]["w"] + params[f"linear_{i}"]["b"]
    if i < n - 1:
      h = jax.nn.relu(h)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], 1))


def make_step(tx):
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state, loss
  return jax.jit(step, donate_argnums=(0, 1))


def tree_bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))


def xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
  ap.add_argument("--archs", default="", help="comma-separated subset (default: all; none)")
  ap.add_argument("--pretrained", default="", help="comma-separated shipped names or paths")
  args = ap.parse_args()

  params0 = init_model(jax.random.PRNGKey(0))
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params0))
  info = mulo.mlp_param_info(params0, input="linear_0", output=f"linear_{len(SIZES) - 2}")
  kx, ky = jax.random.split(jax.random.PRNGKey(1))
  x = jax.random.normal(kx, (BATCH, SIZES[0]))
  y = jax.random.randint(ky, (BATCH,), 0, SIZES[-1])
  model_flops = 6 * BATCH

  entries = {"optax.adam": (optax.adam(1e-3), ADAM_FLOPS, "")}
  archs = [] if args.archs == "none" else (
      args.archs.split(",") if args.archs else lopt.arch_names())
  candidates = [(arch, lopt.build(arch, {}), None) for arch in archs]
  for name in filter(None, args.pretrained.split(",")):
    opt, theta, _ = io.load_meta_params(name)
    candidates.append((name, opt, theta))
  skipped = {}
  for arch, opt, theta in candidates:
    if theta is None:
      theta = opt.init_meta_params(jax.random.PRNGKey(0))
    try:
      tx = opt.transform(theta, num_steps=None, param_info=info)
      state = jax.eval_shape(tx.init, params0)
      g = jax.tree_util.tree_map(jnp.zeros_like, params0)
      measured = xla_flops(lambda g, s, p: tx.update(g, s, p, value=jnp.float32(1.0)),
                           g, state, params0) / n_params
    except Exception as e:  # an architecture for other problem types (e.g. LASSO)
      skipped[arch] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
      continue
    declared = getattr(opt, "flops_per_param", None)
    entries[arch] = ((tx, declared(), "") if declared else (tx, measured, "*"))

  # Compile and warm up every step function, then interleave timed repetitions.
  runs = {}
  for name, (tx, _, _) in entries.items():
    step = make_step(tx)
    p = jax.tree_util.tree_map(jnp.copy, params0)
    # Copies: some inits share one zeros buffer between leaves, which donation forbids.
    s = jax.tree_util.tree_map(jnp.copy, tx.init(p))
    p, s, loss = step(p, s, x, y)
    jax.block_until_ready(loss)
    runs[name] = [step, p, s, [], tree_bytes(s)]
  for _ in range(args.reps):
    for name, run in runs.items():
      step, p, s = run[:3]
      t = time.perf_counter()
      for _ in range(args.steps):
        p, s, loss = step(p, s, x, y)
      jax.block_until_ready((p, s, loss))
      run[3].append((time.perf_counter() - t) / args.steps)
      run[1], run[2] = p, s

  t_adam = statistics.median(runs["optax.adam"][3])
  b_adam = runs["optax.adam"][4]
  print(f"Machine: {platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}; model {'-'.join(map(str, SIZES))} ({n_params:,} params), "
        f"batch {BATCH}; {args.reps} interleaved reps x {args.steps} steps, median.")
  print(f"optax.adam step: {t_adam * 1e3:.2f} ms")
  print("| optimizer | ms/step | time/adam | opt FLOPs/param | bound | time/bound | state/adam |")
  print("|---|---|---|---|---|---|---|")
  for name, run in runs.items():
    t = statistics.median(run[3])
    _, flops, mark = entries[name]
    bound = (model_flops + flops) / (model_flops + ADAM_FLOPS)
    print(f"| {name} | {t * 1e3:.2f} | {t / t_adam:.2f} | {flops:.0f}{mark} | {bound:.2f} | "
          f"{t / t_adam / bound:.2f} | {run[4] / b_adam:.2f} |")
  for arch, why in skipped.items():
    print(f"skipped {arch}: {why}")
  print("* = from XLA cost analysis of the update (architecture declares no count).")


if __name__ == "__main__":
  main()
