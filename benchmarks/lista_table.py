"""NMSE (dB) per layer of ISTA, FISTA, LISTA, LISTA-CPSS and ALISTA on held-out instances.

Trains each learned variant with ``metaopt.amortized.lista.train`` (stage-wise, the
papers' schedule, unless ``--training end_to_end``), evaluates all of them and the
ISTA/FISTA baselines (16 iterations, lambda = the problem's l1) on the same held-out
instances (``test`` key stream, never seen in training) and writes a markdown table
with one row per method, one column per layer k, and the training wall time.

    python benchmarks/lista_table.py                 # classic: 250 x 500, noiseless
    python benchmarks/lista_table.py --quick         # 64 x 128, short stages (minutes)
    python benchmarks/lista_table.py --problem lasso_m250_n500_p0.1_snr20 \\
        --variants alista --out /tmp/alista_snr20.md
"""

from __future__ import annotations

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import typed_config
from metaopt.amortized import lista, solvers
from tasks.problems import get_problem

LABELS = {"ista": "ISTA", "fista": "FISTA", "lista": "LISTA", "lista_cp": "LISTA-CP",
          "lista_cpss": "LISTA-CPSS", "alista": "ALISTA",
          "alista_per_instance": "ALISTA per instance"}
# Every variant trains with its default config (``lista.RECIPES``, the documented
# recipe); --quick only shortens the stages.
QUICK = dict(stage_steps=40, val_every=20)


def config_for(variant: str, num_layers: int, quick: bool = False,
               **overrides) -> lista.LISTAConfig:
  """The config this table trains ``variant`` with: the library default, shortened
  stages with ``quick``, then ``overrides`` (fields left ``None`` keep the recipe)."""
  kw = dict(QUICK) if quick else {}
  kw.update({k: v for k, v in overrides.items() if v is not None})
  return lista.LISTAConfig(variant=variant, num_layers=num_layers, **kw)


def baseline(problem, name, insts, k):
  xs = jax.jit(jax.vmap(lambda i: solvers.SOLVERS[name](problem, i, k)))(insts)
  return np.asarray(solvers.nmse_db(jnp.swapaxes(xs, 0, 1), insts[problem.truth]))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="64 x 128 problem, short stages")
  ap.add_argument("--problem", default=None,
                  help="problem name (default lasso_m250_n500_p0.1_noiseless, "
                       "quick: lasso_m64_n128_p0.1_noiseless)")
  ap.add_argument("--variants", default="lista,lista_cpss,alista")
  ap.add_argument("--layers", type=int, default=16)
  ap.add_argument("--num-test", type=int, default=1000)
  ap.add_argument("--training", default=None, choices=lista.TRAINING,
                  help="default: the variant's recipe (stage-wise)")
  ap.add_argument("--stage-steps", type=int, default=None,
                  help="override the per-variant max steps per stage")
  ap.add_argument("--steps", type=int, default=3000, help="end-to-end steps")
  ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                  help="LISTAConfig overrides for every variant, e.g. stage_init=previous "
                       "ss_p_max=0.08 (typed and checked like metaopt's --set)")
  ap.add_argument("--out", default="lista_table.md")
  ap.add_argument("--include", nargs="*", default=[],
                  help="JSON files written by earlier runs (same problem): their learned "
                       "rows join this table (run variants in parallel, then merge)")
  args = ap.parse_args(argv)

  name = args.problem or ("lasso_m64_n128_p0.1_noiseless" if args.quick
                          else "lasso_m250_n500_p0.1_noiseless")
  problem = get_problem(name)
  k = args.layers
  insts = problem.sample_batch(problem.split_key(jax.random.PRNGKey(0), "test"),
                               args.num_test)
  rows = {m: (baseline(problem, m, insts, k), None) for m in ("ista", "fista")}
  for path in args.include:
    with open(path) as f:
      for m, row in json.load(f).items():
        if row["train_s"] is not None:
          rows[m] = (np.asarray(row["nmse_db"]), row["train_s"])
  for variant in [v for v in args.variants.split(",") if v]:
    try:
      cfg = typed_config.apply_overrides(
          config_for(variant, k, args.quick, training=args.training,
                     stage_steps=args.stage_steps,
                     steps=args.steps if args.training == "end_to_end" else None),
          args.set)
    except ValueError as e:  # ConfigError (unknown key, wrong type) or a bad value
      raise SystemExit(f"--set: {e}") from None
    result = lista.train(problem, cfg, callback=lambda s, m: print(
        f"  {variant} step {s} {m}", flush=True), log_every=1000)
    rows[variant] = (lista.evaluate(problem, result, insts), result.wall_time)
    print(f"{variant}: {rows[variant][0][-1]:.1f} dB at layer {k}, "
          f"{result.wall_time:.0f} s, {len(result.losses)} steps", flush=True)

  cols = sorted({1, 2, 4, 6, 8, 10, 12, 14, k} & set(range(1, k + 1)))
  lines = [f"**{name}**, {args.num_test} held-out instances, "
           f"{args.training or 'stagewise'} training "
           f"({platform.processor() or platform.machine()}, {jax.default_backend()})", "",
           "| NMSE (dB) \\ k | " + " | ".join(map(str, cols)) + " | train time (s) |",
           "|---" * (len(cols) + 2) + "|"]
  order = [m for m in LABELS if m in rows] + [m for m in rows if m not in LABELS]
  for m in order:
    curve, secs = rows[m]
    label = LABELS.get(m, m) + (f" (lambda = {problem.l1:g})" if secs is None else "")
    lines.append(f"| {label} | " + " | ".join(f"{curve[c]:.1f}" for c in cols)
                 + f" | {'-' if secs is None else f'{secs:.0f}'} |")
  table = "\n".join(lines) + "\n"
  with open(args.out, "w") as f:
    f.write(table)
  with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
    json.dump({m: {"nmse_db": [float(x) for x in c], "train_s": s}
               for m, (c, s) in rows.items()}, f, indent=1)
  print(table)


if __name__ == "__main__":
  main()
