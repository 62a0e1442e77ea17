#!/bin/bash
# Session 25 call H: register caps (maxnreg) on the fp8 and 4-bit GEMVs.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 300 python3 .k4/s25/maxnreg.py 2>&1 | grep -v Warn > $OUT/maxnreg.log
grep -E "SUM|Error|Trace|failed|differ" $OUT/maxnreg.log
