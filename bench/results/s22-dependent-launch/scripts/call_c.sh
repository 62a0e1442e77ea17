#!/bin/bash
# Session 22 call C: decode-step graph replay time (us) per format: old tree, the int4 refactor without PDL (nopdl), PDL (nopf).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
run() { PYTHONPATH=$PWD/.k4/$1:$PWD:/tmp/site timeout -s KILL 170 python3 .k4/s22/replay.py $1 none,fp8,awq 2>&1 | grep "REPLAY\|Error"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader
for i in 1 2; do
step "base $i"; run base
step "nopdl $i"; run nopdl
step "nopf $i"; run nopf
done
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
