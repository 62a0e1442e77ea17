#!/bin/bash
# Session 25 call K (final tree): compiled GEMV tests and the fused-vs-unfused quantized greedy decode.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 250 python3 -m pytest -q -p no:cacheprovider tests/test_quant_small_batch.py -k "fused_quantized_decode" 2>&1 | tail -3 | tee $OUT/tests-decode.log
timeout -s KILL 300 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py -k "not compile" 2>&1 | tail -3 | tee $OUT/tests-gemv.log
timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_int4_mma.py 2>&1 | tail -3 | tee $OUT/tests-int4-mma.log
