"""Amortized prediction vs running the iterative solver to the same accuracy.

For each problem: train an amortized MLP (objective loss), then on held-out
instances measure the relative objective gap of its prediction, the number of
iterations the problem's solver needs from zero to reach the same mean gap, and the
wall time of both (jitted, whole held-out batch, median of repeats, compilation
excluded), measured side by side in this run. Also: how many FISTA iterations reach
the NMSE of a 16-layer ALISTA, and the time of both.

    python benchmarks/amortized.py [--steps 2000] [--num-test 256]
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.amortized import amortize, lista, solvers
from tasks.problems import get_problem

CASES = (  # problem, solver used from zero / for fine-tuning, hidden widths
    ("quadratic_d8_cond100", "fista", (256, 256)),
    ("lasso_m64_n128_p0.1_snr40", "fista", (512, 512)),
    ("entropic_ot_n32_eps0.01", "native", (256, 256)),
)


def _time(fn, *args, repeats=20):
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _iters_to_reach(curve, target):
  hit = np.nonzero(np.asarray(curve) <= target)[0]
  return int(hit[0]) if len(hit) else None


def amortized_case(name, solver, hidden, steps, num_test, max_iters=2000):
  pb = get_problem(name)
  insts = pb.sample_batch(pb.split_key(jax.random.PRNGKey(0), "test"), num_test)
  x_star = amortize.solve_batch(pb, insts, 5000)
  result = amortize.train(pb, amortize.AmortizedConfig(
      loss="objective", hidden=hidden, steps=steps, solver=solver))
  pred = amortize.predict(pb, result, insts)
  warm = amortize.evaluate(pb, pred, insts, x_star, 0, solver)
  cold = amortize.evaluate(pb, None, insts, x_star, max_iters, solver)
  gap = float(warm["rel_gap"][0])
  k = _iters_to_reach(cold["rel_gap"], gap)
  predict = jax.jit(lambda i: amortize.predict(pb, result, i))
  t_pred = _time(predict, insts)
  row = {"problem": name, "solver": solver, "train_s": result.wall_time, "pred_gap": gap,
         "pred_dist_db": float(warm["dist_db"][0]), "iters": k, "t_pred": t_pred}
  if k:
    run = jax.jit(lambda i: amortize.finetune(pb, solver, jnp.zeros_like(pred), i, k)[-1])
    row["t_solver"] = _time(run, insts)
  return row


def alista_case(steps, num_test, max_iters=2000):
  pb = get_problem("lasso_m64_n128_p0.1_snr40")
  insts = pb.sample_batch(pb.split_key(jax.random.PRNGKey(0), "test"), num_test)
  result = lista.train(pb, lista.LISTAConfig(variant="alista", num_layers=16, steps=steps))
  nmse = float(lista.evaluate(pb, result, insts)[-1])
  xs = jax.vmap(lambda i: solvers.fista(pb, i, max_iters))(insts)
  curve = np.asarray(solvers.nmse_db(jnp.swapaxes(xs, 0, 1), insts["x_true"]))
  # ALISTA can beat the LASSO solution itself (its thresholds are not tied to lam);
  # then compare with FISTA run until within 0.5 dB of its own converged NMSE.
  target = max(nmse, float(curve.min()) + 0.5)
  k = _iters_to_reach(curve, target)
  t_net = _time(jax.jit(lambda y: result.predict(pb, y)[-1]), insts["y"])
  row = {"alista_nmse_db": nmse, "fista_best_db": float(curve.min()), "iters": k,
         "target_db": target, "t_net": t_net}
  if k:
    row["t_fista"] = _time(jax.jit(lambda i: jax.vmap(
        lambda j: solvers.fista(pb, j, k)[-1])(i)), insts)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=2000, help="training steps per model")
  parser.add_argument("--num-test", type=int, default=256)
  args = parser.parse_args()
  print(f"# machine: {platform.machine()} {platform.processor() or ''}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}")
  print(f"# held-out instances: {args.num_test}; training steps: {args.steps}")
  print("| problem | solver | prediction rel. gap | prediction dist (dB) | solver iters to "
        "same gap | prediction ms | solver ms | speed-up |")
  print("|---|---|---|---|---|---|---|---|")
  for name, solver, hidden in CASES:
    r = amortized_case(name, solver, hidden, args.steps, args.num_test)
    t_solver = r.get("t_solver")
    speed = f"{t_solver / r['t_pred']:.1f}x" if t_solver else "n/a"
    print(f"| {name} | {solver} | {r['pred_gap']:.3g} | {r['pred_dist_db']:.1f} | "
          f"{r['iters']} | {1e3 * r['t_pred']:.2f} | "
          f"{1e3 * t_solver if t_solver else float('nan'):.2f} | {speed} |", flush=True)
  r = alista_case(args.steps, args.num_test)
  speed = f"{r['t_fista'] / r['t_net']:.1f}x" if r.get("t_fista") else "n/a"
  print(f"\nALISTA-16 NMSE {r['alista_nmse_db']:.1f} dB; FISTA's best in 2000 iterations "
        f"{r['fista_best_db']:.1f} dB; FISTA needs {r['iters']} iterations to reach "
        f"{r['target_db']:.1f} dB; time ALISTA "
        f"{1e3 * r['t_net']:.2f} ms vs FISTA {1e3 * r.get('t_fista', float('nan')):.2f} ms "
        f"({speed})")


if __name__ == "__main__":
  main()
