#!/bin/bash
# Session 16 call G (H200): fp8 accuracy with and without fast accumulation (quant_check, Qwen3-0.6B shape).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "quant_check fp8 fast (tree)"; timeout -s KILL 110 python3 bench/quant_check.py --formats fp8 --out $OUT/fast.json 2>&1 | tail -4
step "quant_check fp8 slow"; FAST_ACCUM=0 timeout -s KILL 110 python3 .k4/s16/patched.py bench/quant_check.py --formats fp8 --out $OUT/slow.json 2>&1 | tail -4
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
