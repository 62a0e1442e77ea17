#!/bin/bash
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
{ nvidia-smi --query-gpu=name --format=csv,noheader; date -u
timeout -s KILL 200 python3 .k4/s16/gemv_probe2.py 2>&1 | grep -v Warn | tail -8; date -u; } > $OUT/log.txt 2>&1
cat $OUT/log.txt
