#!/bin/bash
# Session 28 call R: does a small FP8-block model on the Triton route compile inside its timed runs?
# qa-358, Qwen3-0.6B, 128 x 128 FP8 blocks + fp8 KV, TRITON_ROUTE=1 (as sm_89/sm_120), --repeat 2.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
TRITON_ROUTE=1 timeout -s KILL 200 python3 .k4/s28/block_bench_triton.py --workload qa-358 --model random:qwen3-0.6b --quantization fp8 --kv-cache-dtype fp8 --repeat 2 --out-dir $OUT/r 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|compile|Error|Trace" | tee -a $OUT/log.txt
python3 -c "
import json,glob
d=json.load(open(glob.glob('$OUT/r/*.json')[0])); print('compiles_in_timed_runs', json.dumps(d.get('compiles_in_timed_runs'))[:2000])"
