#!/bin/bash
# Session 9 call B (H100): LoRA single stream: the tree (T1: each tile loads its slots, ranks and B before its K loop)
# vs HEAD (T0: after) vs T2 (T1 + shrink programs load A masked by slot only, not by the ranks load).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -3; }
K="--include=tokenmill/*"
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled LoRA tests (T1)"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py 2>&1 | tail -2
for round in 1 2; do
step "T1 $round"; single t1-$round
step "T0 $round"; git apply -R $K .k4/t1.patch && single t0-$round; git apply $K .k4/t1.patch
step "T2 $round"; git apply .k4/t2.patch && single t2-$round; git apply -R .k4/t2.patch
done
step "T1 profile"; timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-t1.txt 2>&1; grep -A8 "GPU kernel time" $R/profile-t1.txt | head -9
step "T2 profile"; git apply .k4/t2.patch && timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-t2.txt 2>&1; grep -A8 "GPU kernel time" $R/profile-t2.txt | head -9; git apply -R .k4/t2.patch
git diff --stat
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
