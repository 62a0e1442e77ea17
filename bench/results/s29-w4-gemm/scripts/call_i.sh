#!/bin/bash
# Session 29 call I (H100): bench/quant_gemm.py --gemv (Qwen3-8B): each format's GEMV against the new weight-only kernel at 1-8 tokens.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 400 python3 bench/quant_gemm.py --gemv --presets qwen3-8b --out $OUT/gemv.json 2>&1 | grep -v Warn | grep -v '^{' | tee -a $OUT/log.txt
