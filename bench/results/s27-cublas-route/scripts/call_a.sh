#!/bin/bash
# Session 27 call A (H200): the cuBLAS block route after its move onto RoutedGemm (HEAD snapshot in
# .k4/s27/head): the trial, its compiled tests, the quant-route tests, then step_times for 128 x 128
# FP8 blocks (decode graph, 128-token prefill) with the prefill's kernel profile.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
H=$PWD/.k4/s27/head
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
cd $H
export PYTHONPATH=$H:/tmp/site
timeout -s KILL 60 python3 -c "import torch; from tokenmill.quantization import fp8_routes; print('has_cublas_blocks', fp8_routes.has_cublas_blocks(torch.device('cuda')))" 2>&1 | tail -3 | tee -a $OUT/log.txt
timeout -s KILL 240 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py tests/test_quant_routes.py -m "not slow" -x 2>&1 | tail -15 | tee $OUT/tests.log
timeout -s KILL 200 python3 $OLDPWD/.k4/s26/block_steps.py block 2>&1 | grep -E "decode graph|prefill|^block|Error|Trace" | tee -a $OUT/log.txt
