#!/usr/bin/env bash
# Issue 11's single-stream lever on one GPU, in one call:
#   1. every small-batch kernel compiled and checked against its reference (bf16 too), and the fused
#      decoder layer against the ordinary one, token for token;
#   2. the single workload (128 in / 256 out) with the small-batch path off, then on: JSON under
#      <out>/single-off/ and <out>/single-on/ (both runs share a file name, hence two folders);
#   3. unless PROFILE=0, the per-kernel step profile (us and launches per step), on then off.
# Usage: bash bench/small_batch.sh [out dir, default bench/results] (MODEL=random:qwen3-0.6b by default);
# each step is independent (one failing is reported, the rest still run).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}"
out="${1:-bench/results}"
model="${MODEL:-random:qwen3-0.6b}"
run() { echo "== $*"; "$@" || echo "!! failed ($?): $*"; }

run env TRITON_INTERPRET=0 python -m pytest -q -p no:cacheprovider tests/test_small_batch_kernels.py -k "not compiles"
for side in off:--no-small-batch-kernels on:--small-batch-kernels; do
    run python -m tokenmill bench --workload single --model "$model" --repeat 3 "${side#*:}" \
        --out-dir "$out/single-${side%%:*}"
done
if [ "${PROFILE:-1}" = 1 ]; then
    for flag in --small-batch-kernels --no-small-batch-kernels; do
        run python bench/profile_step.py --workload single --model "$model" "$flag"
    done
fi
