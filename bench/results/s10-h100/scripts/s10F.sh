#!/bin/bash
# Session 10 call F (H200): LoRA expand per launch with token tiles of 16/32/64 (and a register cap); qa-358 one adapter
# with 32-token tiles (.k4/s10_tile32.patch) vs the tree, alternated; then 8 adapters on 32-token tiles.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "expand per launch"
timeout -s KILL 120 python3 .k4/s10_tile_probe.py 2>&1 | grep -v Warn
for i in 1 2; do
  for v in tree tile32; do
    [ $v = tile32 ] && git apply .k4/s10_tile32.patch
    step "$v qa one adapter $i"; timeout -s KILL 90 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --out $R/lora-$v-$i.json 2>&1 | grep "/ base"
    [ $v = tile32 ] && git apply -R .k4/s10_tile32.patch
  done
done
git apply .k4/s10_tile32.patch
step "tile32 8 adapters"; timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 8 --out $R/lora-tile32-8.json 2>&1 | grep "/ base"
git apply -R .k4/s10_tile32.patch; git status --short | grep -v k4
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
