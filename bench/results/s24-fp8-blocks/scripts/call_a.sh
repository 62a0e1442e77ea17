#!/bin/bash
# Session 24 call A: W8A8 fp8 GEMV through tl.dot (wgmma) vs shipped fp8_gemv, cuBLASLt, kwarps a16.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 500 python3 .k4/s24/wgmma_probe.py 2>&1 | grep -v Warn | tee $OUT/wgmma.log | grep -E "TOTAL|BEST|failed|shipped|scaled|kwarps|Trace|Error" | tail -60
