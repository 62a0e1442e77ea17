#!/bin/bash
# Session 22 call I (H100): prefill CUDA graphs. Step times, old tree (c930d45) vs new alternated.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader
step "step times new"; new timeout -s KILL 150 python3 bench/step_times.py --out $OUT/step-times-new.json 2>&1 | grep -v Warn | grep " us \|Error\|error"
for i in 1 2; do
mkdir -p $OUT/old$i $OUT/new$i
step "old $i"; old timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/old$i 2>&1 | grep -v Warn | grep "tok/s"
step "new $i"; new timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/new$i 2>&1 | grep -v Warn | grep "tok/s\|Error\|error"
done
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
