#!/bin/bash
# Times the full leaderboard v2 report for every baseline (+ shipped learned
# optimizers), frozen targets, two processes (one per core), into fresh databases
# under $OUT (default runs/v2_timed); times in $OUT/t_times.txt. Usage:
#   bash scripts/leaderboard_v2_timed.sh
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
export WANDB_MODE=disabled JAX_PLATFORMS=cpu
O="${OUT:-runs/v2_timed}"
mkdir -p "$O"
rm -f $O/t_a.sqlite $O/t_b.sqlite $O/t_all.sqlite
start=$(date +%s)
( s=$(date +%s); metaopt leaderboard run --suite v2 --db $O/t_a.sqlite --no-progress --tasks mlp_fmnist_w512_d2 mlp_mnist1d_w64_d3 conv_digits_c8x2 logistic_fmnist > $O/t_a.log 2>&1; rc=$?; echo "A $(( $(date +%s) - s )) s rc $rc" >> $O/t_times.txt ) &
( s=$(date +%s); metaopt leaderboard run --suite v2 --db $O/t_b.sqlite --no-progress --tasks mlp_fmnist_w128_d2 mlp_mnist5k_w128_d2 rosenbrock_d10 quadratic_d100_cond100_noise1 quadratic_d100_cond1000 logistic_mnist1d > $O/t_b.log 2>&1; rc=$?; echo "B $(( $(date +%s) - s )) s rc $rc" >> $O/t_times.txt ) &
wait
runs_end=$(date +%s)
metaopt leaderboard merge --db $O/t_all.sqlite $O/t_a.sqlite $O/t_b.sqlite > $O/t_merge.log 2>&1
metaopt leaderboard report --suite v2 --db $O/t_all.sqlite --out $O/t_report > $O/t_report.log 2>&1
end=$(date +%s)
echo "runs wall $(( runs_end - start )) s; merge+report $(( end - runs_end )) s; total $(( end - start )) s; started $(date -d @$start)" >> $O/t_times.txt
