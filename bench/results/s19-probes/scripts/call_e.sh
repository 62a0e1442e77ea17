#!/bin/bash
# Session 19 call E: fp8_mma (one-token e4m3 GEMV on the tensor cores) in the engine. Compiled tests; 8B single
# bf16/fp8 old tree (.k4/base = HEAD) vs new alternated; quant_check fp8; fp8 kernel table.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader
step "compiled tests"; TRITON_INTERPRET=0 new timeout -s KILL 170 python3 -m pytest -q -p no:cacheprovider tests/test_fp8_mma.py tests/test_quant_gemv.py tests/test_quant_small_batch.py -k "not compiles" -rf --tb=short 2>&1 | grep -v "^\.\|Warn" | tail -25
mkdir -p $OUT/old1 $OUT/new1 $OUT/old2 $OUT/new2
step "old"; old timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8 --out-dir $OUT/old1 2>&1 | grep -v Warn | tail -2
step "new"; new timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8 --out-dir $OUT/new1 2>&1 | grep -v Warn | tail -2
step "old"; old timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8 --out-dir $OUT/old2 2>&1 | grep -v Warn | tail -2
step "new"; new timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8 --out-dir $OUT/new2 2>&1 | grep -v Warn | tail -2
step "quant_check fp8 new"; new timeout -s KILL 100 python3 bench/quant_check.py --formats fp8 2>&1 | grep -v Warn | tail -4
step "profile new fp8"; new timeout -s KILL 90 python3 bench/profile_step.py --model random:qwen3-8b --workload single --quantization fp8 2>&1 | grep -v Warn | tail -12
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
