#!/bin/bash
# Session 19 call A: L2 prefetch probe (bf16, fp8-channel, awq chains of one Qwen3-8B layer).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
timeout -s KILL 400 python3 .k4/s19/prefetch_probe.py bf16,fp8-channel,awq 2>&1 | grep -v Warn | tee $OUT/probe.log | tail -100
