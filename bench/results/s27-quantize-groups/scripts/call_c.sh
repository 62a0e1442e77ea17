#!/bin/bash
# Session 27 call C (H200): quantize_token_groups, several groups a program (new) against one (old =
# .k4/base, 9c87244), alternated twice; compiled fp8-rows and token-group tests; FP8-block step times.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 60 python3 .k4/s27/quant_ab.py $t 2>&1 | grep -v Warn | tee -a $OUT/log.txt
done
PYTHONPATH=$NEW timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_fp8_rows.py tests/test_quant_kernels.py -k "token_group or cublas or fp8_rows or norm or quantiz or Fp8Rows or scaled" -m "not slow" 2>&1 | tail -8 | tee $OUT/tests.log
for t in old new; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  echo "$t" | tee -a $OUT/log.txt
  PYTHONPATH=$P timeout -s KILL 150 python3 .k4/s26/block_steps.py block 2>&1 | grep -E "decode graph|prefill|quantize|nvjet|Error|Trace" | tee -a $OUT/log.txt
done
