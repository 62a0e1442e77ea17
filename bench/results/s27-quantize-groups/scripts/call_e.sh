#!/bin/bash
# Session 27 call E (H200): profile_step on qa-358, Qwen3-4B, fp8 KV: 128 x 128 FP8 blocks against fp8 per
# channel (the kernels of the steady 358-sequence decode step).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for m in block channel; do
  echo "== $m" | tee -a $OUT/log.txt
  timeout -s KILL 200 python3 .k4/s27/block_profile.py $m --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --top 16 2>&1 | grep -vi warn | tail -60 | tee -a $OUT/log.txt
done
