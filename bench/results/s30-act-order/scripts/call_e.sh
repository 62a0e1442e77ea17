#!/bin/bash
# Session 30 call E (H100): after the review fixes (commit ec58f0f): the act-order, int4_mma and route
# tests compiled; act-order single stream; AWQ and bf16 single stream (bench/quant_models.py).
[ -d /tmp/site/fastapi ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant_small_batch.py tests/test_quant_routes.py tests/test_quantization.py tests/test_int4_mma.py -k "act_order or act-order or desc_act or another_input_order or warm_up" 2>&1 | tail -6 | tee -a $OUT/log.txt
timeout -s KILL 80 python3 .k4/s30/act_e2e.py act-order-new single $OUT/json 2>&1 | grep RESULT | tee -a $OUT/log.txt
timeout -s KILL 150 python3 bench/quant_models.py --formats none,awq 2>&1 | grep -E "^single" | tee -a $OUT/log.txt
