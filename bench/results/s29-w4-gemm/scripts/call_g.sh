#!/bin/bash
# Session 29 call G (H100): act-order GPTQ (g_idx out of row order) through weight_only_gemm, old tree against new,
# alternated; then compiled tests: the quantized routes and warm-up, and the weight-only GEMM's act-order / odd-size tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for t in old new old new; do
  TREE=$t timeout -s KILL 60 python3 .k4/s29/act_order.py 2>&1 | grep -v Warn | tee -a $OUT/act_order.jsonl
done
PYTHONPATH=$PWD:/tmp/site timeout -s KILL 300 python3 -m pytest -q -p no:cacheprovider tests/test_quant_routes.py tests/test_quant_kernels.py -k "route or warm or act_order or odd_sizes or 16_bit or tuning or dequantize_kernel" 2>&1 | tail -15 | tee $OUT/tests.log
