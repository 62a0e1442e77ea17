#!/bin/bash
# Session 21 call B: split sums counted in with a relaxed atomic (flagged words, no fence) vs count-and-fence.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader
step "probe new"; new timeout -s KILL 150 python3 .k4/s21/gemv_probe.py new 2>&1 | grep -v Warn | tee $OUT/probe_new.log | grep TOTAL
step "probe old"; old timeout -s KILL 100 python3 .k4/s21/gemv_probe.py old 2>&1 | grep -v Warn | tee $OUT/probe_old.log | grep TOTAL
step "GPU tests"; TRITON_INTERPRET=0 new timeout -s KILL 250 python3 -m pytest -x -v -p no:cacheprovider tests/test_split_sum.py tests/test_fp8_mma.py tests/test_int4_mma.py tests/test_quant_gemv.py -k "not compiles and not take_the_tensor_cores" -rf --tb=short > $OUT/tests.log 2>&1; tail -5 $OUT/tests.log; grep -c PASSED $OUT/tests.log
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
