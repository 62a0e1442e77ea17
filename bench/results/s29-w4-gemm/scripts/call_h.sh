#!/bin/bash
# Session 29 call H (H100): act-order GPTQ 4/8-bit, Qwen3-8B: GEMV, kernel and dense route per token count.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 200 python3 .k4/s29/act_routes.py 2>&1 | grep -v Warn | tee $OUT/act_routes.jsonl
