#!/bin/bash
# Session 8 call G (H100): LoRA single stream, the tiles' poll: acquire add of 0 (main) vs volatile loads then
# one acquire fence (.k4/vol_fence.patch) vs volatile loads alone (.k4/vol.patch, a bound, not a fix);
# kernel tables of base and rank-16 steps.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -3; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "profile base / rank 16"
timeout -s KILL 100 python3 bench/profile_step.py --workload single > $R/profile-base.txt 2>&1; grep -A12 "GPU kernel time" $R/profile-base.txt | head -14
timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-lora.txt 2>&1; grep -A12 "GPU kernel time" $R/profile-lora.txt | head -14
step "single: atomic poll"; single main
step "single: volatile + fence"; git apply .k4/vol_fence.patch && single volfence; git apply -R .k4/vol_fence.patch
step "single: volatile only"; git apply .k4/vol.patch && single vol; git apply -R .k4/vol.patch
step "single: atomic poll again"; single main2
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
