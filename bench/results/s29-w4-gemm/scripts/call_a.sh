#!/bin/bash
# Session 29 call A: W4A16 GEMM probe (swap-AB / folded scales so the wgmma stays async) against the tree and the dense route; then MMAv2 (as sm_120 runs) for the same.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 330 python3 .k4/s29/w4_swap.py 2>&1 | grep -v Warn | tee $OUT/w4_swap.jsonl
TRITON_CACHE_DIR=/tmp/tc_v2 DISABLE_MMA_V3=1 TOKENS=64,256 timeout -s KILL 200 python3 .k4/s29/w4_swap.py 2>&1 | grep -v Warn | tee $OUT/w4_swap_mmav2.jsonl
