#!/bin/bash
# Session 7 call B (H100): GEMV rotation sweep for 8B projections: bf16, fp8-channel, int8, gptq4 (AWQ runs GPTQ-4's kernels).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
timeout -s KILL 420 python3 .k3/rot.py bf16,fp8-channel,gptq4,int8 sweep
date -u
} > $OUT/log.txt 2>&1
