#!/bin/bash
# Session 19 call C2 (C: merge looped split by split, slower; C2: each head's splits in one load)
# (.k4/base) and new tree alternated; gpu_check on the new tree; fp8 kernel table.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; which ncu nsys 2>&1 | head -2
mkdir -p $OUT/old1 $OUT/new1 $OUT/old2 $OUT/new2
step "old"; old timeout -s KILL 200 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/old1 2>&1 | grep -v Warn | tail -4
step "new"; new timeout -s KILL 200 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/new1 2>&1 | grep -v Warn | tail -4
step "old"; old timeout -s KILL 200 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/old2 2>&1 | grep -v Warn | tail -4
step "new"; new timeout -s KILL 200 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/new2 2>&1 | grep -v Warn | tail -4
step "verify+kernel tests new"; TRITON_INTERPRET=0 new timeout -s KILL 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_verify_attention.py -k "not compiles" 2>&1 | tail -3
step "profile new fp8"; new timeout -s KILL 90 python3 bench/profile_step.py --model random:qwen3-8b --workload single --quantization fp8 2>&1 | grep -v Warn | tail -14
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
