#!/bin/bash
# Session 7 call C (H100): 4-bit GEMV variants v6/v7 (bf16x2 inline asm) vs current; new byte default shapes.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
timeout -s KILL 200 python3 .k3/rot.py gptq4 default gemv4v:gemv_v6
timeout -s KILL 150 python3 .k3/rot.py gptq4 default gemv4v:gemv_v7
timeout -s KILL 100 python3 .k3/rot.py bf16,fp8-channel,int8 default
date -u
} > $OUT/log.txt 2>&1
