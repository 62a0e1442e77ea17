#!/bin/bash
# Session 26 call C: fp8_gemv launch shapes for 128 x 128 block scales, per Qwen3-8B projection.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 500 python3 .k4/s26/block_shapes.py 2>&1 | grep -v Warn | tee $OUT/block_shapes.log | grep -E "BEST|SUM|failed|Trace|Error" | tail -30
