#!/bin/bash
# Session 22 call B: PDL + L2 prefetch of each GEMV's leading weight bytes before its wait; vs PDL alone (nopf) and the old tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
nopf() { PYTHONPATH=$PWD/.k4/nopf:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader
step "PDL test"; TRITON_INTERPRET=0 new timeout -s KILL 120 python3 -m pytest -x -q -p no:cacheprovider tests/test_dependent_launch.py -rf --tb=short 2>&1 | tail -15
for i in 1 2; do
mkdir -p $OUT/old$i $OUT/new$i $OUT/nopf$i
step "old $i"; old timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/old$i 2>&1 | grep -v Warn | grep "tok/s"
step "nopf $i"; nopf timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/nopf$i 2>&1 | grep -v Warn | grep "tok/s"
step "new $i"; new timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/new$i 2>&1 | grep -v Warn | grep "tok/s\|Error\|error"
done
step "GPU kernel tests"; TRITON_INTERPRET=0 new timeout -s KILL 120 python3 -m pytest -x -q -p no:cacheprovider tests/test_small_batch_kernels.py tests/test_quant_gemv.py -k "not compiles and not compile_for and (awq or fp8 or not quant)" -m "not slow" -rf --tb=short > $OUT/tests.log 2>&1; tail -4 $OUT/tests.log
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
