#!/usr/bin/env bash
# Multi-host meta-training on one machine: two processes joined by
# jax.distributed.initialize() (coordinator on 127.0.0.1, CPU collectives), each with
# 2 forced CPU devices, so the task axis is sharded over 4 devices in 2 processes.
# On a real cluster run the same `metaopt meta-train ... --distributed` command on
# every host with --coordinator HOST0:PORT --num-processes N --process-id I (or let
# JAX read them from the cluster environment: SLURM, TPU pods).
#
#   bash scripts/multihost_demo.sh [CONFIG] [extra --set overrides...]
# Process 0 writes the logs, checkpoints and exported theta to runs/multihost_demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
CONFIG=${1:-configs/adam_digits.py}
shift || true
PORT=${PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
export JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 WANDB_MODE=${WANDB_MODE:-disabled}
ARGS=(meta-train "$CONFIG" --no-progress --distributed --coordinator "127.0.0.1:$PORT"
      --num-processes 2 --set run.run_dir=runs/multihost_demo
      --set outer.num_steps=20 --set estimator.num_tasks=8 --set eval.every=10 "$@")
python -m metaopt.cli "${ARGS[@]}" --process-id 1 > /tmp/multihost_demo_p1.log 2>&1 &
P1=$!
python -m metaopt.cli "${ARGS[@]}" --process-id 0
wait "$P1"
echo "process 1 log: /tmp/multihost_demo_p1.log"
