#!/bin/bash
# Session 9 final check (H100 call N): the tree this session ends on: gpu_check; compiled LoRA, small-batch and quantized-GEMV
# tests; the LoRA targets (single, qa-358 with 1 and 8 adapters).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "gpu_check"
timeout -s KILL 200 python3 bench/gpu_check.py --out $R/gpu-check.json > $OUT/gpu_check.txt 2>&1; echo "rc=$?"; grep -iE "passed|fail|exact" $OUT/gpu_check.txt | head -6
step "GPU kernel tests"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_quant_gemv.py tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py tests/test_small_batch_kernels.py 2>&1 | tail -1
step "lora_check"
timeout -s KILL 300 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora.json 2>&1 | grep "/ base"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
