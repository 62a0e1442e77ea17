#!/bin/bash
# Session 28 call O: weight_only_gemm tile shapes for AWQ (Qwen3-8B) at 32/96/358 tokens against the dense route.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 400 python3 .k4/s28/w4_tiles.py qwen3-8b 32,96,358 2>&1 | grep -v Warn | tee $OUT/w4_tiles.jsonl
