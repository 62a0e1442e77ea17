#!/bin/bash
# Session 8 call L (H200): qa-358 with one adapter, this session's LoRA (per-site counts, one mapping copy)
# against the fifth session's (.k4/old_lora.patch puts its four files back), alternating.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
qa() { timeout -s KILL 100 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --repeat 3 --out $R/lora-$1.json 2>&1 | grep "/ base"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "new 1"; qa new1
step "old 1"; git apply .k4/old_lora.patch && qa old1; git apply -R .k4/old_lora.patch
step "new 2"; qa new2
step "old 2"; git apply .k4/old_lora.patch && qa old2; git apply -R .k4/old_lora.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
