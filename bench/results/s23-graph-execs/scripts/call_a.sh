#!/bin/bash
# Session 23 call A (H200): decode-graph replay with prefill graphs (new), without capturing them (skip), in their own pool (ownpool), old tree (base); then the single stream's GPU timeline.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv,noheader
for t in base new skip ownpool base ownpool new skip; do PYTHONPATH=$PWD/.k4/$t:$PWD:/tmp/site timeout -s KILL 90 python3 .k4/s22/replay.py $t fp8 2>&1 | grep "REPLAY\|Error"; done
PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site timeout -s KILL 150 python3 .k4/s23/timeline.py base fp8,none 2>&1 | grep "TL\|Error"
PYTHONPATH=$PWD/.k4/ownpool:$PWD:/tmp/site timeout -s KILL 100 python3 .k4/s23/timeline.py ownpool fp8 2>&1 | grep "TL\|Error"
