"""Where an inner step of PES meta-training spends its time (reference config).

  python benchmarks/meta_step_breakdown.py [--reps 7] [--iters 50]

The reference config's inner step, vmapped over its 16 task-branches (8 tasks x 2
antithetic branches) of the MLP 64-32-32-10 digits family, batch 128, timed as three
jitted programs side by side (interleaved repetitions, median):

* ``grad``: loss and gradient only;
* ``adam``: plus an optax.adam update;
* ``lopt``: plus the ``mlp`` learned optimizer's update (hidden 32x2, default features).

``(lopt - grad) / lopt`` is the share of an inner step spent in the learned
optimizer: the part a faster optimizer implementation can remove.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tasks  # noqa: E402
from metaopt import lopt as lopt_lib  # noqa: E402

NUM = 16


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--iters", type=int, default=50)
  args = p.parse_args(argv)
  family = tasks.get_family("mlp_digits_w32_d2_family")
  cfg = family.sample_batch(jax.random.PRNGKey(0), NUM)
  data = family.make_task(cfg.static, jax.tree_util.tree_map(lambda x: x[0], cfg.dynamic)).data
  lo = lopt_lib.build("mlp")
  theta = lo.init_meta_params(jax.random.PRNGKey(1))
  opts = {"adam": optax.adam(1e-3), "lopt": lo.transform(theta)}

  def task_of(dyn):
    return family.make_task(cfg.static, dyn)

  def init(dyn, key):
    t = task_of(dyn)
    params = t.init(key)
    return params, {k: o.init(params) for k, o in opts.items()}

  keys = jax.random.split(jax.random.PRNGKey(2), NUM)
  params, states = jax.jit(jax.vmap(init))(cfg.dynamic, keys)

  def grads(dyn, params, key, data):
    t = task_of(dyn)
    batch = t.batch(data, key, "train")
    return jax.value_and_grad(t.loss)(params, batch, key)

  def make(kind):
    def one(dyn, params, state, key, data):
      loss, g = grads(dyn, params, key, data)
      if kind == "grad":
        return loss, g
      u, s = opts[kind].update(g, state[kind], params, value=loss)
      return optax.apply_updates(params, u), s
    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None)))

  fns = {k: make(k) for k in ("grad", "adam", "lopt")}
  times = {k: [] for k in fns}
  for k, f in fns.items():
    jax.block_until_ready(f(cfg.dynamic, params, states, keys, data))
  for _ in range(args.reps):
    for k, f in fns.items():
      t0 = time.perf_counter()
      for _ in range(args.iters):
        out = f(cfg.dynamic, params, states, keys, data)
      jax.block_until_ready(out)
      times[k].append((time.perf_counter() - t0) / args.iters * 1e3)
  med = {k: statistics.median(v) for k, v in times.items()}
  print(f"{NUM} task-branches per inner step, MLP 64-32-32-10 on digits, batch 128; "
        f"median of {args.reps} interleaved reps x {args.iters} steps; load average "
        f"{os.getloadavg()[0]:.1f}")
  for k in fns:
    print(f"  {k:5s} {med[k]:.3f} ms per inner step of all {NUM}")
  print(f"share of the lopt step in the learned optimizer: "
        f"{(med['lopt'] - med['grad']) / med['lopt']:.0%}; adam's share of its step: "
        f"{(med['adam'] - med['grad']) / med['adam']:.0%}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
