#!/bin/bash
# Session 15 call C (H200): decode attention A/B and fp8 tiling sweep at Qwen3-4B's shape; qa-358 4B
# fp8 + fp8 KV (fp16 products) against bf16, alternated; Qwen3-8B single stream bf16 / fp8.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "kernel A/B + sweep"; timeout -s KILL 200 python3 .k4/s15/att_probe.py $OUT/att_probe.json 2>&1 | tail -12
F="--quantization fp8 --kv-cache-dtype fp8"
q() { timeout -s KILL 120 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 "$@" --out-dir $OUT/json 2>&1 | grep -E "^output_tokens_per_s" | head -1; }
step "4b fp8"; q $F
step "4b bf16"; q
step "4b fp8"; q $F
step "4b bf16"; q
step "8b single bf16/fp8"; timeout -s KILL 200 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8 --out-dir $OUT/single 2>&1 | tail -3
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
