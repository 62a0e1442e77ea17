#!/bin/bash
# Session 25 call A: the 1-row 4-bit GEMV's tile shape, K-packed and N-major.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 560 python3 .k4/s25/i4_tiles.py 2>&1 | grep -v Warn | tee $OUT/i4_tiles.log | grep -E "BEST|shipped|failed|Trace|Error" | tail -40
