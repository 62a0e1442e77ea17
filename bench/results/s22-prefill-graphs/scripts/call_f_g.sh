#!/bin/bash
# Session 22 calls F (H200) and G (H100), before the prefill graphs: bench/step_times.py on the tree (PDL reverted).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=$PWD:/tmp/site timeout -s KILL 250 python3 bench/step_times.py --out $OUT/step-times.json 2>&1 | grep -v Warn | grep "us\|Error\|error"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
