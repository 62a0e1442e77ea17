#!/bin/bash
# Session 8 call M (H100): LoRA single stream: one count per site (the tree) vs 8 replicas of it, each producer adding to all 8 and each tile polling its own (.k4/repl.patch).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -3; }
variant() { git apply .k4/$1.patch && single $1$2; git apply -R .k4/$1.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for round in 1 2; do
step "counts $round"; single counts$round
step "repl $round"; variant repl $round
done
step "repl: profile"; git apply .k4/repl.patch && timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-repl.txt 2>&1; grep -A8 "GPU kernel time" $R/profile-repl.txt | head -9; git apply -R .k4/repl.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
