#!/bin/bash
# Session 28 calls I (H100) and J (H200): cuBLAS block-scaled GEMM with / without fast accumulation; qa-358
# bf16 (ratio for the Triton-route runs of calls G and H).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 150 python3 .k4/s28/fast_accum.py 2>&1 | grep -v Warn | tee $OUT/fast_accum.jsonl
echo "== bf16" | tee -a $OUT/log.txt
timeout -s KILL 150 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 --out-dir $OUT/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
