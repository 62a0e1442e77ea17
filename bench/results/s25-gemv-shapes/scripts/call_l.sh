#!/bin/bash
# Session 25 call L: fp8_gemv launch shapes under register caps (gate|up, q|k|v), H200.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 400 python3 .k4/s25/fp8_cap_shapes.py 2>&1 | grep -v Warn > $OUT/fp8_cap_shapes.log
grep -E "BEST|Error|Trace|tree" $OUT/fp8_cap_shapes.log | tail -10
