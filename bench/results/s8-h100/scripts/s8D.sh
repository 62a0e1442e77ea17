#!/bin/bash
# Session 8 call D: the committed 4-bit GEMV (next K step's loads issued ahead, 2 programs per SM):
# compiled kernel tests, the HBM GEMV bench, Qwen3-8B single stream bf16 / AWQ / GPTQ / fp8.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u; git log --oneline | head -1
step "GPU kernel tests"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_quant_gemv.py tests/test_quant_small_batch.py 2>&1 | tail -3
step "quant_gemv_hbm"
timeout -s KILL 120 python3 bench/quant_gemv_hbm.py --formats bf16,fp8-channel,gptq4,awq --out $R/quant-gemv-hbm.json 2>&1 | grep "one layer"
step "quant_models 8B"
timeout -s KILL 240 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8,awq,gptq --out-dir $R/qm 2>&1 | grep "^single" | cut -c1-250
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
