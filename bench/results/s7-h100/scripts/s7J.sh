#!/bin/bash
# Session 7 call J: int4 GEMV launch variants (tile width, warps, programs per SM).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
timeout -s KILL 300 python3 .k3/rot.py gptq4 default i4var:gemv
date -u
} > $OUT/log.txt 2>&1
