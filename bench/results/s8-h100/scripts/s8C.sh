#!/bin/bash
# Session 8 call C (H100): byte GEMV with split K and the RMSNorm deferred; 4-bit prefetch again.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "fp8 + byte_split"
timeout -s KILL 200 python3 .k4/rot.py fp8-channel default v:byte_split > $R/bsplit.txt 2>&1; echo rc=$?; grep -v "^{" $R/bsplit.txt | tail -8
step "int8 + byte_split"
timeout -s KILL 200 python3 .k4/rot.py int8 default v:byte_split > $R/i8split.txt 2>&1; echo rc=$?; grep -v "^{" $R/i8split.txt | tail -8
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
for f in $R/bsplit.txt $R/i8split.txt; do grep variant $f | python3 -c "
import sys,json
for l in sys.stdin:
    d=json.loads(l); print(d['proj'], d['shape'][8:], d['us'], d.get('rel_err'))"; done
