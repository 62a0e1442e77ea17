#!/bin/bash
# Session 8 call I (H100): LoRA single stream: per-site counts (.k4/count.patch) vs s stamped with the launch's
# tag in the same 64-bit word (.k4/stamp.patch: poll and read in one load), the stamp with a nanosleep backoff.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -3; }
variant() { git apply .k4/$1.patch && single $1$2; git apply -R .k4/$1.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for round in 1 2; do
for v in count stamp stamp_sleep; do step "$v $round"; variant $v $round; done
done
step "stamp: profile"; git apply .k4/stamp.patch && timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-stamp.txt 2>&1; grep -A8 "GPU kernel time" $R/profile-stamp.txt | head -9; git apply -R .k4/stamp.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
