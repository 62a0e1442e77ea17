#!/bin/bash
# Session 25 call E (H100): compiled 4-bit tests, then as call D: the 4-bit GEMV per projection, old/new alternated; Qwen3-8B AWQ single stream, old (.k4/base) / new alternated, one process a run; bf16 once.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_gemv.py -k "4_bit or awq or split or gptq" 2>&1 | tail -3 | tee $OUT/tests.log
PYTHONPATH=$NEW timeout -s KILL 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_small_batch.py -k "awq or gptq or 4_bit" 2>&1 | tail -3 | tee -a $OUT/tests.log
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 100 python3 .k4/s25/shapes.py $t nosweep 2>&1 | grep -v Warn > $OUT/shapes-$t.log
done
grep -h "default {" $OUT/shapes-*.log
run() { PYTHONPATH=$1 timeout -s KILL 120 python3 ${@:2} 2>&1 | grep -E "tok/s|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models
for rep in 1 2; do
  echo "old awq $rep"; run $OLD bench/quant_models.py --formats awq --out-dir $OUT/models-old$rep
  echo "new awq $rep"; run $NEW bench/quant_models.py --formats awq --out-dir $OUT/models-new$rep
done
