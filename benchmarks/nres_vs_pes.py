"""PES vs NRES on the reference meta-training config (not a test).

Reference config (as benchmarks/meta_train.py): per-parameter MLP optimizer on the
MLP 64-32-32-10 digits family, 8 tasks, truncation 20, horizon 200 with random
offsets, sigma 0.01, Adam 1e-3 on theta. Both estimators cost the same per outer step
(two antithetic branches of every task for one truncation), so "equal inner-step
cost" is "equal outer steps".

1. Gradient variance: at the initial theta, after ``--warmup`` truncations (so runs
   are mid-way), ``--samples`` consecutive estimates per estimator; prints the summed
   per-coordinate variance and the ratio NRES / PES.
2. Meta-loss after equal wall time: each estimator meta-trains for ``--seconds``
   (interleaved in ``--rounds`` slices, A B A B ..., so machine drift hits both) and
   the held-out evaluation (the trainer's ``evaluate``: final training loss of 4
   held-out tasks over 200 steps) is printed for both.

Usage: ``python benchmarks/nres_vs_pes.py [--samples 50] [--seconds 120] [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.meta.config import (EstimatorConfig, EvalConfig, MetaTrainConfig, OuterConfig,
                                 RunConfig, ScheduleConfig)
from metaopt.meta.trainer import MetaTrainer


def trainer_for(name: str, run_dir: str) -> MetaTrainer:
  return MetaTrainer(MetaTrainConfig(
      family="mlp_digits_w32_d2_family", lopt="mlp",
      estimator=EstimatorConfig(name=name, num_tasks=8, sigma=0.01),
      schedule=ScheduleConfig(truncation_length=20, horizon=200, random_offsets=True),
      outer=OuterConfig(optimizer="adam", lr=1e-3, num_steps=10**9),
      eval=EvalConfig(every=0, tasks=4, horizon=200),
      run=RunConfig(run_dir=run_dir, wandb_mode="disabled")))


def gradient_variance(trainer: MetaTrainer, warmup: int, samples: int) -> float:
  est = trainer.estimator
  theta = trainer.lopt.init_meta_params(jax.random.PRNGKey(0))
  worker = est.init_worker_state(theta, jax.random.PRNGKey(1))
  step = jax.jit(est.compute_gradient)
  grads = []
  for i in range(warmup + samples):
    g, worker, _ = step(theta, worker, trainer.data, jax.random.PRNGKey(100 + i))
    if i >= warmup:
      grads.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]))
  return float(np.sum(np.var(np.stack(grads), axis=0)))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--warmup", type=int, default=10)
  p.add_argument("--samples", type=int, default=50)
  p.add_argument("--seconds", type=float, default=120.0, help="meta-training time each")
  p.add_argument("--rounds", type=int, default=4, help="interleaved slices")
  args = p.parse_args()
  print(f"machine: {platform.platform()}, {os.cpu_count()} cores, jax {jax.__version__} "
        f"({jax.devices()[0].platform}), load average {os.getloadavg()[0]:.1f}")
  tmp = tempfile.mkdtemp(prefix="nres_vs_pes_")
  trainers = {n: trainer_for(n, os.path.join(tmp, n)) for n in ("pes", "nres")}
  var = {n: gradient_variance(t, args.warmup, args.samples) for n, t in trainers.items()}
  print(f"gradient variance (sum over coordinates, {args.samples} estimates after "
        f"{args.warmup} truncations): pes {var['pes']:.4g}, nres {var['nres']:.4g}, "
        f"nres/pes {var['nres'] / var['pes']:.3f}")
  states = {n: t.init_state() for n, t in trainers.items()}
  steps = {n: 0 for n in trainers}
  compiled = {n: t.compile_step(states[n]) for n, t in trainers.items()}
  for _ in range(args.rounds):
    for name, t in trainers.items():
      end = time.perf_counter() + args.seconds / args.rounds
      while time.perf_counter() < end:
        states[name], loss = compiled[name](states[name], t.data)
        steps[name] += 1
      loss.block_until_ready()
  for name, t in trainers.items():
    ev = t.evaluate(states[name].theta)
    print(f"{name}: {steps[name]} outer steps in {args.seconds:.0f}s; held-out validation "
          f"loss {ev['eval/lopt_valid_loss']:.4f} (tuned Adam: {ev['eval/adam_valid_loss']:.4f})")


if __name__ == "__main__":
  jnp.zeros(())  # Initialize the backend before timing.
  main()
