#!/bin/bash
# Session 28 call P: compiled quantization, route and warm-up specialisation tests on the final tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 500 python3 -m pytest -q -p no:cacheprovider tests/test_quant_routes.py tests/test_quant_kernels.py tests/test_kernel_specialization.py tests/test_quant_small_batch.py -m "not slow" -x 2>&1 | tail -6 | tee $OUT/tests.log
