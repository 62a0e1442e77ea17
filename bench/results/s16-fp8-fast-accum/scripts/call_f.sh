#!/bin/bash
# Session 16 call F (H200): the tree (fast accumulation + deep one-wave fp8 GEMV): 8B single per format, qa-358 4B
# fp8 vs bf16, GEMV deep A/B per shape, compiled fp8 tests, gpu_check.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "8b single tree"; timeout -s KILL 150 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8,awq --out-dir $OUT/single 2>&1 | grep "^single"
B="bench --workload qa-358 --model random:qwen3-4b --repeat 2"
step "qa bf16"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "qa fp8 (tree)"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/fp8 --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "deep probe"; timeout -s KILL 120 python3 .k4/s16/deep_probe.py 2>&1 | grep -v Warn | grep "rows 1"
step "fp8 tests compiled"; TRITON_INTERPRET=0 timeout -s KILL 120 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py tests/test_fp8_rows.py > $OUT/tests.log 2>&1; tail -3 $OUT/tests.log
step "gpu_check"; timeout -s KILL 200 python3 bench/gpu_check.py --out $OUT/gpu-check.json 2>&1 | tail -8
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
