#!/bin/bash
# Session 26 call K: torch._scaled_mm with DeepSeek-style block scales.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 560 python3 .k4/s26/scaled_mm_block.py 2>&1 | grep -v Warn | tee $OUT/sweep.log | grep -vE "^$" | tail -30
