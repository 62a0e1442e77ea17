#!/bin/bash
# Session 26 call A (H200): int4_gemv with pair conversions in one instruction (cvt.rn.bf16x2.f32) and the
# word sum's bf16 halves widened by bit ops: bits vs old, per-layer GEMV us old/new alternated, AWQ single
# stream old/new alternated (one process a run), bf16 once, compiled 4-bit tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
PYTHONPATH=$OLD timeout -s KILL 90 python3 .k4/s26/i4_bits.py old 2>&1 | grep -v Warn | tee $OUT/bits.log
PYTHONPATH=$NEW timeout -s KILL 90 python3 .k4/s26/i4_bits.py new 2>&1 | grep -v Warn | tee -a $OUT/bits.log
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 100 python3 .k4/s25/shapes.py $t nosweep 2>&1 | grep -v Warn > $OUT/shapes-$t.log
done
grep -h "default {" $OUT/shapes-*.log | tee $OUT/log.txt
run() { PYTHONPATH=$1 timeout -s KILL 120 python3 ${@:2} 2>&1 | grep -E "tok/s|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models | tee -a $OUT/log.txt
for rep in 1 2; do
  echo "old awq $rep" | tee -a $OUT/log.txt; run $OLD bench/quant_models.py --formats awq --out-dir $OUT/models-old$rep | tee -a $OUT/log.txt
  echo "new awq $rep" | tee -a $OUT/log.txt; run $NEW bench/quant_models.py --formats awq --out-dir $OUT/models-new$rep | tee -a $OUT/log.txt
done
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_gemv.py -k "4_bit or awq or split or gptq" 2>&1 | tail -3 | tee $OUT/tests.log
PYTHONPATH=$NEW timeout -s KILL 100 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_small_batch.py -k "awq or gptq or 4_bit" 2>&1 | tail -3 | tee -a $OUT/tests.log
