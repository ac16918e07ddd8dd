#!/usr/bin/env bash
# The whole leaderboard v3 (every registry baseline, the self-tuning field and every
# shipped learned optimizer) from its frozen targets, as two processes split by tasks
# (balanced by measured cost), then merged and reported. Resumable: re-running the
# same command skips every stored run. Writes $OUT/{a,b,v3}.sqlite and the report to
# docs/leaderboard/v3.
#
#   bash scripts/leaderboard_v3.sh                          # the 2-core CPU
#   JAX_PLATFORMS=cuda bash scripts/leaderboard_v3.sh       # a GPU machine (jax[cuda])
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/activate ] || [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
export WANDB_MODE=${WANDB_MODE:-disabled} JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
OUT=${OUT:-runs/v3}
mkdir -p "$OUT"
# XLA's persistent cache: a resumed invocation does not compile the same programs again.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
A="transformer_fortunes_d128_l2_s32_b4 autoencoder_mnist5k_128-32 mlp_fmnist_w64_d1_b64
   logistic_fmnist quadratic_d100_cond10000 rosenbrock_d10"
B="resnet_bn_fmnist_c8-16_b1 mlp_breast_cancer_w256_d2 mlp_mnist5k_w128_d2 mlp_fmnist_w128_d2
   mlp_fmnist_w256_d3_tanh quadratic_d100_cond100_noise1"
start=$(date +%s)
# shellcheck disable=SC2086  (the task lists are word-split on purpose)
metaopt leaderboard run --suite v3 --db "$OUT/a.sqlite" --no-progress --tasks $A \
  > "$OUT/a.log" 2>&1 &
pid_a=$!
# shellcheck disable=SC2086
metaopt leaderboard run --suite v3 --db "$OUT/b.sqlite" --no-progress --tasks $B \
  > "$OUT/b.log" 2>&1 &
pid_b=$!
wait "$pid_a" "$pid_b"
sources=("$OUT/a.sqlite" "$OUT/b.sqlite")
[ -f "$OUT/board.sqlite" ] && sources+=("$OUT/board.sqlite")   # an earlier single-process run
metaopt leaderboard merge --db "$OUT/v3.sqlite" "${sources[@]}"
metaopt leaderboard report --suite v3 --db "$OUT/v3.sqlite" --out docs/leaderboard/v3
echo "leaderboard v3: $(( $(date +%s) - start )) s of wall clock for this invocation"
