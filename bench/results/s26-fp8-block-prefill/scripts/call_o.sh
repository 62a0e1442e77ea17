#!/bin/bash
# Session 26 call O (H200, after review): the cuBLAS block-scaled trial and the GPU tests of the route.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 60 python3 .k4/s26/cublas_trial.py 2>&1 | tail -8 | tee -a $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py -k "cublas or token_group or fp8_block" tests/test_quant_gemv.py::test_fp8_block_gemv_in_block_scaled_one_wave_tiles_equals_the_unfused_ops -m "not slow" -x 2>&1 | tail -30 | tee $OUT/tests.log
