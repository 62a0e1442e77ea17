#!/usr/bin/env bash
# Issue 14's targets on a 2-GPU machine (nvidia-h200-x2), in one call; JSON results go to bench/results/.
#   Qwen3-8B single stream: TP=2 vs TP=1 (target >= 1.6x tokens/s)
#   Qwen3-32B shape, TP=2: fits, qa-358 throughput with the pair's bytes floor
#   qa-358 on Qwen3-0.6B: DP=2 vs one GPU (target >= 1.9x)
#   all-reduce time per decode step at batch 1 and 256 (Qwen3-8B and -32B shapes)
# Usage: bash bench/multi_gpu.sh [extra bench flags]; each step is independent (one failing is reported).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}"
run() { echo "== $*"; "$@" || echo "!! failed ($?): $*"; }

run python bench/allreduce.py --world-size 2 --hidden 4096 --layers 36 --batches 1 256 --save
run python bench/allreduce.py --world-size 2 --hidden 5120 --layers 64 --batches 1 256 --save
run python -m tokenmill bench --workload single --model random:qwen3-8b "$@"
run python -m tokenmill bench --workload single --model random:qwen3-8b --tensor-parallel-size 2 "$@"
run python -m tokenmill bench --workload qa-358 --model random:qwen3-32b --tensor-parallel-size 2 "$@"
run python -m tokenmill bench --workload qa-358 --model random:qwen3-0.6b "$@"
run python -m tokenmill bench --workload qa-358 --model random:qwen3-0.6b --data-parallel-size 2 "$@"
