#!/bin/bash
# Session 28 call Q: a W4A16 GEMM probe (duplicate-row word loads, no interleave) against weight_only_gemm and the dense route.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 420 python3 .k4/s28/w4_probe.py 2>&1 | grep -v Warn | tee $OUT/w4_probe.jsonl
