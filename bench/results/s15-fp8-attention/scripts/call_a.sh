#!/bin/bash
# Session 15 call A (H200): compiled fp8-rows/route tests; Qwen3-4B qa-358 bf16 vs fp8 weights + fp8 KV
# alternated; Qwen3-8B single stream bf16 / fp8 / AWQ; fp8 single-stream kernel table.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u; git log --oneline | head -1
step "compiled tests"; TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -rf --tb=line -p no:cacheprovider tests/test_fp8_rows.py tests/test_quant_routes.py -m "not slow" > $OUT/tests.log 2>&1; grep -E "^FAILED|^/.*Error|^E |passed|failed" $OUT/tests.log | head -30
F="--quantization fp8 --kv-cache-dtype fp8"
q() { timeout -s KILL 120 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 "$@" --out-dir $OUT/json 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2; }
step "4b fp8"; q $F
step "4b bf16"; q
step "4b fp8"; q $F
step "4b bf16"; q
step "8b single bf16/fp8/awq"; timeout -s KILL 200 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8,awq --out-dir $OUT/single 2>&1 | tail -8
step "profile 8b single fp8"; timeout -s KILL 90 python3 bench/profile_step.py --model random:qwen3-8b --workload single --quantization fp8 2>&1 | tail -40
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
