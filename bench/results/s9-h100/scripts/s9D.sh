#!/bin/bash
# Session 9 call D (H100): LoRA single stream: T4 (the tree: T2 + one-token LoRA tiles capped at 80 registers, 3 programs an SM)
# vs T2 (no cap), alternating; per-projection times; compiled tests; qa-358 with 1 and 8 adapters.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
single() { timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-$1.json 2>&1 | grep "^single" | tail -1; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled LoRA + small-batch tests (T4)"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py tests/test_small_batch_kernels.py 2>&1 | tail -2
for round in 1 2; do
step "T4 $round"; single t4-$round
step "T2 $round"; git apply -R .k4/t4.patch && single t2-$round; git apply .k4/t4.patch
done
step "T4 per projection"; timeout -s KILL 150 python3 .k4/perproj9.py 2>&1 | grep -v -i warn | head -6
step "T4 qa-358"; timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora-t4-qa.json 2>&1 | grep "/ base"
git diff --stat | tail -1
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
