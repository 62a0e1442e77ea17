#!/bin/bash
# Session 29 call B: W4A16 GEMM probe, folded scales, tile sweep 16-256 tokens (swap and plain orientation, fp32 vs 16-bit dequant math).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
CONFIGS=B TOKENS=16,24,32,48,64,96,128,192,256 timeout -s KILL 500 python3 .k4/s29/w4_swap.py 2>&1 | grep -v Warn | tee $OUT/w4_swap.jsonl
