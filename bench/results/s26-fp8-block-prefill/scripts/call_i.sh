#!/bin/bash
# Session 26 call I (H200): the FP8 block GEMM's tiles at 128 / 512 / 2048 token rows.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 560 python3 .k4/s26/block_gemm_sweep.py 2>&1 | grep -v Warn | tee $OUT/sweep.log | grep -E "proj|SUM|Trace|Error" | tail -30
