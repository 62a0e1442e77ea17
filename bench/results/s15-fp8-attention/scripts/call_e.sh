#!/bin/bash
# Session 15 call E: the tree (fp16 products, V converted by opaque PTX, 32-token tiles for fp8 caches)
# against fp16 products alone (att_tree.py), qa-358 4B fp8 + fp8 KV alternated, bf16; compiled attention tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
F="--quantization fp8 --kv-cache-dtype fp8"
q() { timeout -s KILL 120 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 "$@" --out-dir $OUT/json 2>&1 | grep -E "^output_tokens_per_s" | head -1; }
cp tokenmill/kernels/triton/attention.py /tmp/new.py
step "tree"; q $F
cp .k4/s15/att_tree.py tokenmill/kernels/triton/attention.py; step "fp16 only"; q $F
cp /tmp/new.py tokenmill/kernels/triton/attention.py; step "tree"; q $F
step "bf16"; q
cp .k4/s15/att_tree.py tokenmill/kernels/triton/attention.py; step "fp16 only"; q $F
cp /tmp/new.py tokenmill/kernels/triton/attention.py
step "compiled attention tests"; TRITON_INTERPRET=0 timeout -s KILL 100 python3 -m pytest -q -rf --tb=line -p no:cacheprovider tests/test_kernels.py tests/test_verify_attention.py -m "not slow" > $OUT/tests.log 2>&1; grep -E "^FAILED|^/.*Error|^E |passed|failed" $OUT/tests.log | head -20
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
