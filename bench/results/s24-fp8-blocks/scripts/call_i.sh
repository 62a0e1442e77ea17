#!/bin/bash
# Session 24 call I (H100): the quantization test files compiled, on the final tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 540 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py tests/test_quant_routes.py tests/test_quant_small_batch.py tests/test_quant_kernels.py 2>&1 | tail -8 | tee $OUT/tests.log
