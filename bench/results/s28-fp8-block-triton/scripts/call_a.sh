#!/bin/bash
# Session 28 call A: FP8 block GEMM variants (block_probe.py) on Qwen3-4B and 8B shapes.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 330 python3 .k4/s28/block_probe.py 4b 358,128,2048 2>&1 | grep -v Warn | tee $OUT/probe4b.jsonl
timeout -s KILL 200 python3 .k4/s28/block_probe.py 8b 2048,358 0,1,4,5,6 2>&1 | grep -v Warn | tee $OUT/probe8b.jsonl
