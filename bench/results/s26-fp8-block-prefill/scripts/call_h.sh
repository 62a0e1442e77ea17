#!/bin/bash
# Session 26 call H (H200): fp8 per channel vs 128 x 128 blocks: the decode steps' kernels (torch profiler).
# ms, and the prefill's kernels (torch profiler).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for m in channel block; do
  timeout -s KILL 150 python3 .k4/s26/block_decode_prof.py $m 2>&1 | grep -E "^$m|Error|Trace" | tee -a $OUT/log.txt
done
