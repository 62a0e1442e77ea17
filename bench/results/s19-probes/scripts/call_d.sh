#!/bin/bash
# Session 19 call D: fp8 GEMV on the tensor cores (mma m16n8k32 e4m3; emulated through f16 HMMA on sm_90) vs shipped.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
timeout -s KILL 300 python3 .k4/s19/f8mma_probe.py 2>&1 | grep -v Warn | tee $OUT/f8mma.log | tail -60
