#!/bin/bash
# Session 8 final check (calls J on an H100, K on an H200): gpu_check; compiled LoRA and quantized-GEMV tests;
# LoRA targets (per-site counts); Qwen3-8B single stream bf16 / AWQ / GPTQ / fp8; the HBM GEMV bench.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "gpu_check"
timeout -s KILL 200 python3 bench/gpu_check.py --out $R/gpu-check.json > $OUT/gpu_check.txt 2>&1; echo "rc=$?"; grep -iE "passed|fail|exact" $OUT/gpu_check.txt | head -6
step "GPU kernel tests"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_quant_gemv.py tests/test_quant_small_batch.py tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py 2>&1 | tail -2
step "lora_check"
timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 5 --out $R/lora.json 2>&1 | grep "/ base"
step "quant_models 8B"
timeout -s KILL 170 python3 bench/quant_models.py --model random:qwen3-8b --formats awq,none,awq,fp8 --out-dir $R/qm 2>&1 | grep "^single" | cut -c1-200
step "quant_gemv_hbm"
timeout -s KILL 100 python3 bench/quant_gemv_hbm.py --formats bf16,fp8-channel,int8,gptq4,awq --out $R/quant-gemv-hbm.json 2>&1 | grep "one layer"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
