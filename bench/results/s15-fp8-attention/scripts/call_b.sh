#!/bin/bash
# Session 15 call B: fp8-cache decode attention with fp16 products (tree) against bf16 products (old):
# compiled attention tests; kernel A/B at Qwen3-4B's shape; qa-358 4B fp8 + fp8 KV alternated; profiles.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled attention tests"; TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -rf --tb=line -p no:cacheprovider tests/test_kernels.py tests/test_verify_attention.py tests/test_int8_kv_cache.py -m "not slow" > $OUT/tests.log 2>&1; grep -E "^FAILED|^/.*Error|^E |passed|failed" $OUT/tests.log | head -30
step "kernel A/B"; timeout -s KILL 150 python3 .k4/s15/att_probe.py $OUT/att_probe.json 2>&1 | tail -8
F="--quantization fp8 --kv-cache-dtype fp8"
q() { timeout -s KILL 120 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 "$@" --out-dir $OUT/json 2>&1 | grep -E "^output_tokens_per_s" | head -1; }
prof() { timeout -s KILL 90 python3 bench/profile_step.py --model random:qwen3-4b --top 6 $F 2>&1 | sed -n '/steady/,/decode of 1/p' | head -12; }
step "tree"; q $F
git apply -R .k4/s15/fp16_mma.patch && step "old"; q $F
git apply .k4/s15/fp16_mma.patch && step "tree"; q $F
git apply -R .k4/s15/fp16_mma.patch && step "old"; q $F
step "profile old"; prof
git apply .k4/s15/fp16_mma.patch && step "profile tree"; prof
step "bf16"; q
git diff --stat
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
