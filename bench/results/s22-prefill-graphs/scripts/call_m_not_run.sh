#!/bin/bash
# Session 22 call M (H200): fp8 decode-graph replay: base, new, new without capturing prefill graphs (skip), prefill graphs in their own pool (ownpool).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
for t in base skip ownpool; do PYTHONPATH=$PWD/.k4/$t:$PWD:/tmp/site timeout -s KILL 60 python3 .k4/s22/replay.py $t fp8 2>&1 | grep "REPLAY\|Error"; done
PYTHONPATH=$PWD:/tmp/site timeout -s KILL 60 python3 .k4/s22/replay.py new fp8 2>&1 | grep "REPLAY\|Error"
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
