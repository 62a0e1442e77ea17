#!/bin/bash
# Session 26 call D/E: FP8 128 x 128 block checkpoints: block-scaled one-wave tiles. Per-layer block GEMVs
# old/new alternated, then single stream Qwen3-8B: bf16 once, fp8 per channel once (new), old/new blocks
# alternated twice (one process a run); compiled fp8 tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 100 python3 .k4/s26/block_ab.py $t 2>&1 | grep -v Warn | tee -a $OUT/log.txt
done
run() { PYTHONPATH=$1 timeout -s KILL 120 python3 ${@:2} 2>&1 | grep -E "tok/s|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models | tee -a $OUT/log.txt
run $NEW bench/quant_models.py --formats fp8 --out-dir $OUT/models-fp8 | tee -a $OUT/log.txt
for rep in 1 2; do
  echo "old block $rep" | tee -a $OUT/log.txt; run $OLD .k4/s24/block_model.py --out-dir $OUT/models-old$rep | tee -a $OUT/log.txt
  echo "new block $rep" | tee -a $OUT/log.txt; run $NEW .k4/s24/block_model.py --out-dir $OUT/models-new$rep | tee -a $OUT/log.txt
done
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py -k "fp8 and not compile" 2>&1 | tail -3 | tee $OUT/tests.log
