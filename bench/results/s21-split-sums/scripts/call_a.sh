#!/bin/bash
# Session 21 call A: flagged split sums (split_sum) vs count-and-fence; fp8_mma revived on them.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader
step "GPU tests"; TRITON_INTERPRET=0 new timeout -s KILL 240 python3 -m pytest -q -p no:cacheprovider tests/test_split_sum.py tests/test_all_reduce_kernel.py tests/test_fp8_mma.py tests/test_quant_gemv.py tests/test_int4_mma.py -k "not compiles and not take_the_tensor_cores" -rf --tb=short 2>&1 | grep -v "^\.\|Warn" | tail -25
step "probe new"; new timeout -s KILL 150 python3 .k4/s21/gemv_probe.py new 2>&1 | grep -v Warn | tee $OUT/probe_new.log | grep TOTAL
step "probe old"; old timeout -s KILL 100 python3 .k4/s21/gemv_probe.py old 2>&1 | grep -v Warn | tee $OUT/probe_old.log | grep TOTAL
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
