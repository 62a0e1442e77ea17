#!/bin/bash
# Session 9 call E (H200): the tree (abcf36d): compiled LoRA tests; LoRA targets (single, qa-358 with 1 and 8 adapters);
# the LoRA large-batch kernel table; per-projection single-stream times.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled LoRA + small-batch tests"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py tests/test_small_batch_kernels.py 2>&1 | tail -1
step "lora_check single + qa-358"
timeout -s KILL 300 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora.json 2>&1 | grep "/ base"
step "single again"
timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 5 --out $R/lora-single2.json 2>&1 | grep "/ base"
step "profile lora large batch"
timeout -s KILL 150 python3 bench/profile_step.py --lora-rank 16 --top 14 > $R/profile-lora.txt 2>&1; sed -n '/steady/,/decode of 1/p' $R/profile-lora.txt | head -22
step "profile base large batch"
timeout -s KILL 150 python3 bench/profile_step.py --top 14 > $R/profile-base.txt 2>&1; sed -n '/steady/,/decode of 1/p' $R/profile-base.txt | head -22
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
