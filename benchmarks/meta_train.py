"""Inner steps per second of PES meta-training on the reference config.

Reference (learned_optimization runs it at ~1,600-2,000 inner steps/s on a 2-core
CPU): 8 tasks, truncation 20, inner horizon 200 with random start offsets, MLP
64-32-32-10 (ReLU) on 8x8 digits, batch 128, per-parameter MLP optimizer (hidden
32x2), sigma 0.01, Adam 1e-3 on theta. An inner step is one task's forward+backward
on a batch plus one optimizer update; the two antithetic branches count as two.

The timed function is the trainer's own jitted outer step (estimate + clip + Adam +
metric window), so the number is what ``metaopt meta-train`` gets.

  python benchmarks/meta_train.py                 # all local devices
  python benchmarks/meta_train.py --devices 2     # forces 2 CPU devices (sets XLA_FLAGS)
"""

import argparse
import os
import sys
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--devices", type=int, default=0,
                      help="force this many host CPU devices (0: leave as is)")
  parser.add_argument("--steps", type=int, default=30, help="timed outer steps")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--num_tasks", type=int, default=8)
  args = parser.parse_args()
  if args.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
  import jax  # pylint: disable=import-outside-toplevel
  from metaopt.meta.config import (  # pylint: disable=import-outside-toplevel
      EstimatorConfig, EvalConfig, MetaTrainConfig, OuterConfig, RunConfig, ScheduleConfig)
  from metaopt.meta.trainer import MetaTrainer  # pylint: disable=import-outside-toplevel

  cfg = MetaTrainConfig(
      family="mlp_digits_w32_d2_family", lopt="mlp",
      estimator=EstimatorConfig(name="pes", num_tasks=args.num_tasks, sigma=0.01),
      schedule=ScheduleConfig(truncation_length=20, horizon=200, random_offsets=True),
      outer=OuterConfig(optimizer="adam", lr=1e-3), eval=EvalConfig(every=0),
      run=RunConfig(run_dir="/tmp/metaopt_bench"))
  trainer = MetaTrainer(cfg)
  state = trainer.init_state()
  t0 = time.perf_counter()
  state, loss = trainer.step(state, trainer.data)
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  inner_per_outer = cfg.estimator.num_tasks * 2 * cfg.schedule.truncation_length
  rates, cpu_rates = [], []
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
      state, loss = trainer.step(state, trainer.data)
    loss.block_until_ready()
    rates.append(args.steps * inner_per_outer / (time.perf_counter() - t0))
    cpu_rates.append(args.steps * inner_per_outer / (time.process_time() - c0))
  best = max(rates)
  print(f"devices={jax.device_count()} platform={jax.devices()[0].platform} "
        f"num_tasks={cfg.estimator.num_tasks} compile+first step {compile_s:.1f}s "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  print(f"PES inner steps/s (wall): best {best:.0f}, all {[round(r) for r in rates]}")
  # CPU time of this process (all its threads): robust to other jobs on the machine.
  print(f"PES inner steps per CPU-second: best {max(cpu_rates):.0f}, "
        f"all {[round(r) for r in cpu_rates]}")
  print(f"ratio vs learned_optimization reference (1,600-2,000/s): "
        f"{best / 2000:.2f}x - {best / 1600:.2f}x (target >= 1.5x)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
