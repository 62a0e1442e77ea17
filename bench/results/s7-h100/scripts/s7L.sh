#!/bin/bash
# Session 7 call L (H100): GEMV vs weight-only kernel at 1-8 tokens with the new 4-bit GEMV (GEMV_UP_TO_TOKENS).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
cd bench && timeout -s KILL 400 python3 quant_gemm.py --presets qwen3-8b --gemv --out $R/quant-gemv-rows.json 2>&1 | grep -v "^{" | tail -40
date -u
} > $OUT/log.txt 2>&1
