#!/bin/bash
# Session 26 call L/M: FP8 block GEMMs through cuBLAS's block-scaled GEMM: GPU tests, the route per token
# count, single stream FP8 blocks old/new alternated (one process a run), prefill step times old/new.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 60 python3 .k4/s26/cublas_trial.py 2>&1 | tail -8 | tee -a $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py -k "cublas or token_group or fp8_block" -m "not slow" -x 2>&1 | tail -30 | tee $OUT/tests.log
PYTHONPATH=$NEW timeout -s KILL 200 python3 .k4/s26/cublas_small.py 2>&1 | grep -v Warn | tee -a $OUT/log.txt
run() { PYTHONPATH=$1 timeout -s KILL 150 python3 ${@:2} 2>&1 | grep -E "tok/s|decode graph|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models | tee -a $OUT/log.txt
for rep in 1 2; do
  echo "old block $rep" | tee -a $OUT/log.txt; run $OLD .k4/s24/block_model.py --out-dir $OUT/models-old$rep | tee -a $OUT/log.txt
  echo "new block $rep" | tee -a $OUT/log.txt; run $NEW .k4/s24/block_model.py --out-dir $OUT/models-new$rep | tee -a $OUT/log.txt
done
echo "old steps" | tee -a $OUT/log.txt; PYTHONPATH=$OLD timeout -s KILL 150 python3 .k4/s26/block_steps.py block 2>&1 | grep -E "decode graph|Error" | tee -a $OUT/log.txt
echo "new steps" | tee -a $OUT/log.txt; PYTHONPATH=$NEW timeout -s KILL 150 python3 .k4/s26/block_steps.py block 2>&1 | grep -E "decode graph|Error" | tee -a $OUT/log.txt
