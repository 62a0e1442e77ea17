#!/bin/bash
# Session 15 call G (H100): the final tree (module splits merged): bench/gpu_check.py (fp32 greedy exact,
# bf16 logprobs incl. the fp8 KV cache with fp16 products), compiled attention tests ran in calls B, E, F.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u; git log --oneline | head -1
step "gpu_check"; timeout -s KILL 150 python3 bench/gpu_check.py --out $OUT/gpu-check.json 2>&1 | tail -6
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
