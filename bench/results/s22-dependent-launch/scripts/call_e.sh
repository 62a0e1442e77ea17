#!/bin/bash
# Session 22 call E: where the single stream's 128-token prefill step goes (host launch vs GPU), per format.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site timeout -s KILL 200 python3 .k4/s22/prefill.py none,fp8,awq 2>&1 | grep "PREFILL\|Error"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
