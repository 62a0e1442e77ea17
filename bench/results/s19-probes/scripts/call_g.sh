#!/bin/bash
# Session 19 call G: fp8 tensor-core GEMV with K split across the warps of a program (deterministic) vs shipped.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
timeout -s KILL 200 python3 .k4/s19/kwarps_probe.py 2>&1 | grep -v Warn | tee $OUT/kwarps.log | grep -E "TOTAL|err" | tail -30
