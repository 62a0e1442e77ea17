#!/bin/bash
# Session 8 call B (H100): tensor-core GEMV variants (fp8 W8A8 / W8A16 dot, 4-bit dequant dot) vs shipped.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "fp8 + byte_dot"
timeout -s KILL 200 python3 .k4/rot.py fp8-channel default v:byte_dot > $R/bdot.txt 2>&1; echo rc=$?; grep -v "^{" $R/bdot.txt | tail -8
step "awq + int4_dot"
timeout -s KILL 200 python3 .k4/rot.py awq default v:int4_dot > $R/i4dot.txt 2>&1; echo rc=$?; grep -v "^{" $R/i4dot.txt | tail -8
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
for f in $R/bdot.txt $R/i4dot.txt; do grep variant $f | python3 -c "
import sys,json
for l in sys.stdin:
    d=json.loads(l); print(d['proj'], d['shape'][8:], d['us'], d.get('rel_err'))"; done
