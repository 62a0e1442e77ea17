#!/bin/bash
# Session 8 call H (H100): LoRA single stream, tag flags (main) vs per-site counts zeroed once a forward
# (.k4/count.patch: producers add to their site's count, tiles poll that one count), alternating.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -3; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "flags"; single flags1
step "counts"; git apply .k4/count.patch && single counts1; git apply -R .k4/count.patch
step "flags"; single flags2
step "counts"; git apply .k4/count.patch && single counts2
step "counts: profile"; timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-counts.txt 2>&1; grep -A8 "GPU kernel time" $R/profile-counts.txt | head -9
git apply -R .k4/count.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
