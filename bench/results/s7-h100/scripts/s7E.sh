#!/bin/bash
# Session 7 call E (H100): int4_gemv integrated: GPU tests, microbench, 8B single per format, quant error.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU tests"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" tests/test_quant_gemv.py tests/test_quant_small_batch.py tests/test_quant_kernels.py 2>&1 | tail -15
step "rot gptq4"
timeout -s KILL 100 python3 .k3/rot.py gptq4,awq default 2>&1 | grep -A10 SUMMARY
step "quant_models 8B"
timeout -s KILL 260 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8,int8,awq,gptq --out-dir $R/qm 2>&1 | grep "^single" | cut -c1-250
step "quant_check"
timeout -s KILL 150 python3 bench/quant_check.py --formats int8,fp8,awq,gptq --out $R/quant-check.json 2>&1 | grep -E "^(unquantized|int8|fp8|awq|gptq) " | cut -c1-330
date -u
} > $OUT/log.txt 2>&1
tar czf $OUT/r.tgz -C $OUT r
