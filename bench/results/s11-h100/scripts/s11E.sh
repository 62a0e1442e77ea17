#!/bin/bash
# Session 11 call E (H100): qa-358 one adapter and single stream, new vs old alternated three times, --repeat 3 each.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/fused.patch; }
new() { git apply .k4/fused.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for i in 1 2 3; do
  for v in old new; do
    [ $v = old ] && old
    step "$v $i"; timeout -s KILL 120 python3 bench/lora_check.py --skip-mixed --workloads qa-358 single --num-loras 0 1 --repeat 3 --out $R/lora-$v-$i.json 2>&1 | grep "/ base"
    [ $v = old ] && new
  done
done
git status --short | grep -v "^??"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
