#!/bin/bash
# Session 21 call C: fp8 tensor-core GEMV with activations as f16 pairs vs the in-kernel exchange.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
timeout -s KILL 300 python3 .k4/s21/pairs_probe.py 2>&1 | grep -v Warn | tee $OUT/pairs_probe.log | tail -14
