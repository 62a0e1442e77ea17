#!/bin/bash
# Session 9 call H (H200): LoRA at qa-358: the base GEMM's stacked A rows padded so the GEMM's width is a multiple of 256
# (P1, .k4/p1.patch) vs the tree (P0): kernel table of the decode step, then qa-358 one adapter alternating.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
prof() { timeout -s KILL 120 python3 bench/profile_step.py --lora-rank 16 --top 6 > $R/profile-$1.txt 2>&1; sed -n '/GPU kernel time/,/decode of 1/p' $R/profile-$1.txt | head -9; }
qa() { timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --repeat 3 --out $R/lora-$1.json 2>&1 | grep "/ base"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "P1 profile"; git apply .k4/p1.patch && prof p1; git apply -R .k4/p1.patch
step "P0 profile"; prof p0
for round in 1 2; do
step "P1 qa $round"; git apply .k4/p1.patch && qa p1-$round; git apply -R .k4/p1.patch
step "P0 qa $round"; qa p0-$round
done
git diff --stat | tail -1
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
