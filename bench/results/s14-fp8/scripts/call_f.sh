#!/bin/bash
# Session 14 call F (deferred-scales branch, SiLU-and-mul quantized by a second launch): test_fp8_rows compiled;
# Qwen3-4B qa-358 fp8 + fp8 KV once; a step profile.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled tests"; TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -rf --tb=line -p no:cacheprovider tests/test_fp8_rows.py -m "not slow" > $OUT/tests.log 2>&1; grep -E "^FAILED|^/.*Error|^E |passed|failed" $OUT/tests.log | head -30
F="--quantization fp8 --kv-cache-dtype fp8"
step "branch"; timeout -s KILL 100 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 $F --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2
step "profile branch"; timeout -s KILL 90 python3 bench/profile_step.py --model random:qwen3-4b --top 12 $F 2>&1 | sed -n '/steady/,/decode of 1/p'
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
