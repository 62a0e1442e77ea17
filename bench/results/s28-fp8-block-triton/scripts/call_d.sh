#!/bin/bash
# Session 28 call D: fp8_block_gemm with fp8-typed operands (new) against uint8 + bitcast (old = HEAD
# e673852 in .k4/s28/base), alternated twice; compiled FP8-block tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/s28/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 100 python3 .k4/s28/gemm_ab.py $t 2>&1 | grep -v Warn | tee -a $OUT/gemm_ab.jsonl
done
PYTHONPATH=$NEW timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py -k "fp8_block or fp8_checkpoint or cublas or layers_on" 2>&1 | tail -4 | tee $OUT/tests.log
