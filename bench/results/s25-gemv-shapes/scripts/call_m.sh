#!/bin/bash
# Session 25 call M (H200) and N (H100): the wave tile (32 x 256) on top of the cap; old = .k4/base = c1e847c:
# alternated, then Qwen3-8B fp8 single stream old (.k4/base) / new alternated, one process a run; bf16 once.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 100 python3 .k4/s25/fp8_ab.py $t 2>&1 | grep -v Warn | tee $OUT/fp8-ab-$t.log | grep rows
done
PYTHONPATH=$NEW timeout -s KILL 100 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_gemv.py -k "fp8" 2>&1 | tail -2 | tee $OUT/tests.log
run() { PYTHONPATH=$1 timeout -s KILL 120 python3 ${@:2} 2>&1 | grep -E "tok/s|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models
for rep in 1 2; do
  echo "old fp8 $rep"; run $OLD bench/quant_models.py --formats fp8 --out-dir $OUT/models-old$rep
  echo "new fp8 $rep"; run $NEW bench/quant_models.py --formats fp8 --out-dir $OUT/models-new$rep
done
