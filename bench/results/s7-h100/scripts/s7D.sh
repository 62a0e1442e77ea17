#!/bin/bash
# Session 7 call D (H100): 4-bit GEMV v8 (bf16x2 asm + split-K with last-split reduction).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
timeout -s KILL 300 python3 .k3/rot.py gptq4 default gemv4v:gemv_v8
date -u
} > $OUT/log.txt 2>&1
