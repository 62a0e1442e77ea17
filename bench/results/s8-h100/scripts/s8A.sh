#!/bin/bash
# Session 8 call A (H100): GEMV variants (software prefetch, 2-D activation loads) vs shipped, weights from HBM.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "awq + int4_pf"
timeout -s KILL 150 python3 .k4/rot.py bf16,awq default v:int4_pf > $R/i4pf.txt 2>&1; echo rc=$?; grep -v "^{" $R/i4pf.txt | tail -12
step "fp8 + byte_x2d"
timeout -s KILL 150 python3 .k4/rot.py fp8-channel default v:byte_x2d > $R/x2d.txt 2>&1; echo rc=$?; grep -v "^{" $R/x2d.txt | tail -8
step "fp8 + byte_pf"
timeout -s KILL 150 python3 .k4/rot.py fp8-channel default v:byte_pf > $R/pf.txt 2>&1; echo rc=$?; grep -v "^{" $R/pf.txt | tail -8
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
