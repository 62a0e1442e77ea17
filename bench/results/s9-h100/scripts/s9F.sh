#!/bin/bash
# Session 9 call F (H200): the batched LoRA expand at qa-358: E2 (the tree: y's load issued with h's and B's, 128-column tiles)
# vs E0 (HEAD), E1 (64 columns), E3 (256): kernel table of the LoRA decode step, then qa-358 one adapter, E2 vs E0 alternating.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
prof() { timeout -s KILL 120 python3 bench/profile_step.py --lora-rank 16 --top 4 > $R/profile-$1.txt 2>&1; grep -E "GPU kernel time|_expand_kernel" $R/profile-$1.txt | head -2; }
qa() { timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --repeat 3 --out $R/lora-$1.json 2>&1 | grep "/ base"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled LoRA kernel tests (E2)"
TRITON_INTERPRET=0 timeout -s KILL 100 python3 -m pytest -q -p no:cacheprovider tests/test_lora_kernels.py 2>&1 | tail -1
step "E2 profile"; prof e2
step "E0 profile"; git apply .k4/e0.patch && prof e0; git apply -R .k4/e0.patch
step "E1 profile"; git apply .k4/bn64.patch && prof e1; git apply -R .k4/bn64.patch
step "E3 profile"; git apply .k4/bn256.patch && prof e3; git apply -R .k4/bn256.patch
for round in 1 2; do
step "E2 qa $round"; qa e2-$round
step "E0 qa $round"; git apply .k4/e0.patch && qa e0-$round; git apply -R .k4/e0.patch
done
git diff --stat | tail -1
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
