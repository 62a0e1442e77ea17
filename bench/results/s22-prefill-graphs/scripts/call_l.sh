#!/bin/bash
# Session 22 call L (H200): decode-graph replay time, c930d45 (base) vs the tree with prefill graphs (new), alternated.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
nvidia-smi --query-gpu=name --format=csv,noheader
for i in 1 2; do
PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site timeout -s KILL 100 python3 .k4/s22/replay.py base fp8,awq 2>&1 | grep "REPLAY\|Error"
PYTHONPATH=$PWD:/tmp/site timeout -s KILL 100 python3 .k4/s22/replay.py new fp8,awq 2>&1 | grep "REPLAY\|Error"
done
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
