#!/bin/bash
# Session 29 call K (H100): compiled weight-only GEMM tests after the review fixes (float32 activations unpipelined).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py tests/test_int4_mma.py -k "tiles_inside or odd_sizes or tuning or 16_bit or dequantize_kernel or weight_only or layers_the_mma" 2>&1 | tail -4 | tee $OUT/tests.log
