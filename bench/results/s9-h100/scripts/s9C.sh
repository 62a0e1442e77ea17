#!/bin/bash
# Session 9 call C (H100): LoRA single stream: T3 (the tree: T2 + a shrink program takes its whole row in one step,
# the RMSNorm factor from the same x) vs T2 (tiles load B before the K loop; shrink A loads masked by slot only) vs T0 (HEAD).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -1; }
to_t2() { git apply -R .k4/t3.patch; }
from_t2() { git apply .k4/t3.patch; }
to_t0() { git apply -R .k4/t3.patch && git apply -R .k4/t2.patch && git apply -R --include='tokenmill/*' .k4/t1.patch; }
from_t0() { git apply --include='tokenmill/*' .k4/t1.patch && git apply .k4/t2.patch && git apply .k4/t3.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled LoRA + small-batch tests (T3)"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py tests/test_small_batch_kernels.py 2>&1 | tail -2
for round in 1 2; do
step "T3 $round"; single t3-$round
step "T2 $round"; to_t2 && single t2-$round; from_t2
step "T0 $round"; to_t0 && single t0-$round; from_t0
done
git diff --stat | tail -1
step "T3 profile"; timeout -s KILL 100 python3 bench/profile_step.py --workload single --lora-rank 16 > $R/profile-t3.txt 2>&1; grep -A8 "GPU kernel time" $R/profile-t3.txt | head -9
step "T3 qa-358"; timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora-t3-qa.json 2>&1 | grep "/ base"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
