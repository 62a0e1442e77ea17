#!/bin/bash
# Session 9 call O (H100): the tree after the review's fixes: compiled LoRA and small-batch tests; LoRA single stream and qa-358.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU kernel tests"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py tests/test_small_batch_kernels.py 2>&1 | tail -1
step "lora_check"
timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 --repeat 3 --out $R/lora.json 2>&1 | grep "/ base"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
