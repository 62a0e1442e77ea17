#!/bin/bash
# Session 25 call G: the RMSNorm prologue's step (NORM_BLOCK) for the fp8 and 4-bit GEMVs.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 300 python3 .k4/s25/norm_block.py 2>&1 | grep -v Warn > $OUT/norm_block.log
grep -E "SUM|Error|Trace" $OUT/norm_block.log
