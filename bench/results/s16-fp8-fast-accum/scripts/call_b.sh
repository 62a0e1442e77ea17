#!/bin/bash
# Session 16 call B (H200): fast accumulation in the tree: qa-358 4B fp8 vs bf16; fp8 compiled tests; 8B single
# stream per format and its device idle time.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
B="bench --workload qa-358 --model random:qwen3-4b --repeat 2"
step "bf16"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "fp8 fast accum (tree)"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/fast --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "fp8 slow accum"; FAST_ACCUM=0 timeout -s KILL 100 python3 .k4/s16/patched.py $B --out-dir $OUT/json/slow --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "fp8 tests compiled"; TRITON_INTERPRET=0 timeout -s KILL 120 python3 -m pytest -q -p no:cacheprovider tests/test_fp8_rows.py tests/test_quant_routes.py > $OUT/tests.log 2>&1; tail -3 $OUT/tests.log
step "8b single"; timeout -s KILL 150 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8 --out-dir $OUT/single 2>&1 | grep "^single"
step "bubbles"; for f in none fp8; do timeout -s KILL 90 python3 .k4/s16/bubbles.py $f 2>&1 | grep -v Warn | tail -9; done
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
