#!/bin/bash
# Session 10 call A: quantized GEMV sweep (Triton loop pipeliner) on one Qwen3-8B layer; then 8B single stream tree vs best.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "sweep"
timeout -s KILL ${SWEEP_S:-330} python3 .k4/s10_gemv.py $R/sweep.json 2>&1 | grep -v Warning
step "single"
[ -f $R/sweep.json.best ] && timeout -s KILL ${SINGLE_S:-240} python3 .k4/s10_single.py $R/sweep.json.best $R/single.json 2>&1 | grep -v Warning | tail -12
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
