#!/bin/bash
# Session 9 call A: where a Qwen3-4B qa-358 step goes, bf16 vs fp8 weights + fp8 KV (issue 12's 1.3x target).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for fmt in "" "--quantization fp8 --kv-cache-dtype fp8" "--kv-cache-dtype fp8" "--quantization fp8"; do
  step "bench 4B qa-358 $fmt"
  timeout -s KILL 150 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 $fmt --out-dir $R 2>&1 | grep -E "tok/s|floor" | head -4
done
for fmt in "" "--quantization fp8 --kv-cache-dtype fp8"; do
  step "profile 4B $fmt"
  timeout -s KILL 200 python3 bench/profile_step.py --model random:qwen3-4b --top 30 $fmt 2>&1 | sed -n '/first steps/,/decode of 1/p'
done
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
