#!/bin/bash
# Session 15 call D (H100): fp8-cache decode attention variants (old bf16 products, tree fp16 products,
# V or K and V converted by opaque inline PTX so they reach the products through fp16 shared memory)
# x tilings at Qwen3-4B's shape; qa-358 4B fp8 + fp8 KV with K+V PTX against the fp16 tree, alternated.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "variants"; timeout -s KILL 240 python3 .k4/s15/att_probe2.py $OUT/att_probe2.json 2>&1 | grep -v Warning | tail -20
F="--quantization fp8 --kv-cache-dtype fp8"
q() { timeout -s KILL 120 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 "$@" --out-dir $OUT/json 2>&1 | grep -E "^output_tokens_per_s" | head -1; }
cp tokenmill/kernels/triton/attention.py /tmp/kv.py
step "kv asm"; q $F
cp .k4/s15/att_tree.py tokenmill/kernels/triton/attention.py; step "fp16 tree"; q $F
cp /tmp/kv.py tokenmill/kernels/triton/attention.py; step "kv asm"; q $F
cp .k4/s15/att_tree.py tokenmill/kernels/triton/attention.py; step "fp16 tree"; q $F
cp /tmp/kv.py tokenmill/kernels/triton/attention.py
step "bf16"; q
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
