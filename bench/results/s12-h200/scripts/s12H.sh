#!/bin/bash
# Session 12 call H (H200): the single stream and qa-358 alternated three times, old / new; before it calls F (H200) / G (H100); G alternates the single stream too: o's and down's LoRA expand in the residual RMSNorm (rank-major B).
# Compiled tests, profile, then qa-358 alternated old (.k4/norm.patch reversed) / new; the targets on the new tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/norm.patch; }
new() { git apply .k4/norm.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u

for v in old new old new old new; do
  [ $v = old ] && old
  step "$v single, qa 1 and 8 adapters"; timeout -s KILL 100 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 2 --out $R/lora-$v-$SECONDS.json 2>&1 | grep "/ base"
  [ $v = old ] && new
done
git status --short | grep -v "^??"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
