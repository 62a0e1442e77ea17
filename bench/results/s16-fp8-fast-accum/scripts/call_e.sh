#!/bin/bash
# Session 16 call E (H100): deep one-wave fp8 GEMV (tree) A/B per shape and at model level; qa-358 4B fp8 vs bf16
# with fast accumulation (tree); compiled GEMV tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "deep probe"; timeout -s KILL 150 python3 .k4/s16/deep_probe.py 2>&1 | grep -v Warn | tail -8
step "8b single tree"; timeout -s KILL 120 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8 --out-dir $OUT/single 2>&1 | grep "^single"
step "8b single fp8 deep off"; DEEP=0 timeout -s KILL 90 python3 .k4/s16/patched.py bench/quant_models.py --model random:qwen3-8b --formats fp8 2>&1 | grep "^single"
B="bench --workload qa-358 --model random:qwen3-4b --repeat 2"
step "qa bf16"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "qa fp8 (tree)"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/fp8 --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "gemv tests compiled"; TRITON_INTERPRET=0 timeout -s KILL 120 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py -k fp8 > $OUT/tests.log 2>&1; tail -3 $OUT/tests.log
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
