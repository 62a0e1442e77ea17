#!/bin/bash
# Session 7 call A (H100): kernel tables. 8B single bf16/awq/fp8; 0.6B single base vs LoRA r16; 4B qa-358 bf16 vs fp8+fp8kv.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for q in none awq fp8; do step "8B single $q"; a=""; [ $q != none ] && a="--quantization $q"
timeout -s KILL 150 python3 bench/profile_step.py --workload single --model random:qwen3-8b $a 2>&1 | grep -v Warning | tail -45; done
for l in 0 16; do step "0.6B single lora-rank $l"
timeout -s KILL 90 python3 bench/profile_step.py --workload single --model random:qwen3-0.6b --lora-rank $l 2>&1 | grep -v Warning | tail -45; done
for q in "" "--quantization fp8 --kv-cache-dtype fp8"; do step "4B all $q"
timeout -s KILL 150 python3 bench/profile_step.py --workload all --model random:qwen3-4b $q 2>&1 | grep -v Warning | head -30; done
date -u
} > $OUT/log.txt 2>&1
