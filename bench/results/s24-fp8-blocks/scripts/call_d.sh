#!/bin/bash
# Session 24 call D: tl.dot fp8 GEMV, a8/a16, with and without the RMSNorm prologue in the kernel.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 500 python3 .k4/s24/tc_probe2.py 2>&1 | grep -v Warn | tee $OUT/tc2.log | grep -E "BEST|shipped|failed|Trace|Error" | tail -40
