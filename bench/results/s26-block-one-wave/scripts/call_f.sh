#!/bin/bash
# Session 26 call F (H200): the slow fused-against-unfused greedy decodes (fp8, FP8 checkpoint, GPTQ act-order)
# and the compiled block tests on the final tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 300 python3 -m pytest -q -p no:cacheprovider tests/test_quant_small_batch.py -k "fused_quantized_decode" 2>&1 | tail -3 | tee $OUT/tests-decode.log
timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py -k "block and not compile" 2>&1 | tail -3 | tee $OUT/tests-block.log
