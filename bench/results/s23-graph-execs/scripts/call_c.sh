#!/bin/bash
# Session 23 call C (H200): graph_threshold.py: where the decode graph's replay turns slow; CUDA_DEVICE_MAX_CONNECTIONS on 20 decode graphs.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site
timeout -s KILL 150 python3 .k4/s23/graph_threshold.py sweep 1 200 3000 2>&1 | grep "THR\|Error"
timeout -s KILL 100 python3 .k4/s23/graph_threshold.py noupload 1 1000 3000 noupload 2>&1 | grep "THR\|Error"
timeout -s KILL 100 python3 .k4/s23/graph_threshold.py one5000 1 5000 5000 2>&1 | grep "THR\|Error"
for c in 1 32; do CUDA_DEVICE_MAX_CONNECTIONS=$c timeout -s KILL 150 python3 .k4/s23/graph_threshold.py conn$c 256 1 0 2>&1 | grep "THR\|Error"; done
