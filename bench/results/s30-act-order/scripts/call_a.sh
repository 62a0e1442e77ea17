#!/bin/bash
# Session 30 call A: act-order GPTQ reordered at load. Compiled tests, then the per-layer timings.
[ -d /tmp/site/fastapi ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 220 python3 -m pytest -q -p no:cacheprovider tests/test_quant_small_batch.py tests/test_quant_routes.py tests/test_quantization.py tests/test_quantization_models.py -k "act_order or act-order or desc_act or gptq" 2>&1 | tail -15 | tee -a $OUT/log.txt
timeout -s KILL 300 python3 .k4/s30/act_layers.py 2>&1 | grep -v Warn | tee $OUT/act_layers.jsonl
