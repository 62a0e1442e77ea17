#!/bin/bash
# Session 19 call F: engine fp8_mma per projection (fused and not, programs per SM 1-8) vs fp8_gemv.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
timeout -s KILL 200 python3 .k4/s19/mma_fused_probe.py 2>&1 | grep -v Warn | tee $OUT/mma_fused.log | tail -12
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_fp8_mma.py -k "not compiles" -rf --tb=short 2>&1 | grep -v "^\.\|Warn" | tail -25 | tee $OUT/tests.log
