#!/bin/bash
# Session 23 call E (H200): graph_cond.py on the old tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site

timeout -s KILL 200 python3 .k4/s23/graph_cond.py cond cond 2>&1 | grep "CND\|Error\|error"
