#!/bin/bash
# Session 23 call B (H200): graphs_probe.py on the old tree (dummy graphs; 256 sequences' decode graphs) and the patched one.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site timeout -s KILL 120 python3 .k4/s23/graphs_probe.py base1 1 10,400,2000 2>&1 | grep "PROBE\|Error"
PYTHONPATH=$PWD/.k4/new:$PWD:/tmp/site timeout -s KILL 120 python3 .k4/s23/graphs_probe.py new1 1 "" 2>&1 | grep "PROBE\|Error"
PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site timeout -s KILL 200 python3 .k4/s23/graphs_probe.py base256 256 "" 2>&1 | grep "PROBE\|Error"
