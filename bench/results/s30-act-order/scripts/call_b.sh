#!/bin/bash
# Session 30 call B: act-order GPTQ 4-bit end to end, Qwen3-8B random weights: bf16, row-ordered GPTQ,
# act-order as the old tree ran it (no reordering: dense route) and as it runs now; one stream, 64 streams.
[ -d /tmp/site/fastapi ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for run in "act-order-new single" "act-order-old single" "gptq single" "bf16 single" "act-order-new 64" "act-order-old 64" "bf16 64"; do
  set -- $run
  mkdir -p $OUT/$1-$2
  start=$(date +%s)
  timeout -s KILL 150 python3 .k4/s30/act_e2e.py $1 $2 $OUT/$1-$2 > $OUT/$1-$2/stdout.txt 2>&1
  echo "rc $? $(($(date +%s)-start)) s: $(grep RESULT $OUT/$1-$2/stdout.txt)" | tee -a $OUT/log.txt
done
