#!/bin/bash
# Session 12 call A: where qa-358's LoRA time goes in the prompt steps (kernels of steps 2-4) and decode; base vs one rank-16 adapter.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "profile base"; timeout -s KILL 150 python3 bench/profile_step.py --top 16 > $R/profile-base.txt 2>&1; grep -v Warn $R/profile-base.txt | head -60
step "profile lora"; timeout -s KILL 150 python3 bench/profile_step.py --top 16 --lora-rank 16 > $R/profile-lora.txt 2>&1; grep -v Warn $R/profile-lora.txt | head -60
step "qa one adapter"; timeout -s KILL 100 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --out $R/lora.json 2>&1 | grep "/ base"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
