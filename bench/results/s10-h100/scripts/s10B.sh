#!/bin/bash
# Session 10 call B: byte GEMV probe (norm weight layout, loads only, tensor cores) on one Qwen3-8B layer.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
timeout -s KILL 400 python3 .k4/s10_probe.py $R/probe.json 2>&1 | grep -v Warning
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
