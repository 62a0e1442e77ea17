#!/bin/bash
# Session 16 call A (H100): fp8 GEMV conversion variants; _scaled_mm fast accumulation; qa-358 4B fp8 A/B.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "gemv probe"; timeout -s KILL 150 python3 .k4/s16/gemv_probe.py 2>&1 | grep -v Warning | tail -12
step "scaled_mm probe"; timeout -s KILL 90 python3 .k4/s16/scaled_mm_probe.py 2>&1 | tail -14
B="bench --workload qa-358 --model random:qwen3-4b --repeat 2"
step "bf16"; timeout -s KILL 100 python3 -m tokenmill $B --out-dir $OUT/json/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "fp8 slow accum"; FAST_ACCUM=0 timeout -s KILL 100 python3 .k4/s16/patched.py $B --out-dir $OUT/json/slow --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "fp8 fast accum"; FAST_ACCUM=1 timeout -s KILL 100 python3 .k4/s16/patched.py $B --out-dir $OUT/json/fast --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
step "fp8 slow accum again"; FAST_ACCUM=0 timeout -s KILL 100 python3 .k4/s16/patched.py $B --out-dir $OUT/json/slow2 --quantization fp8 --kv-cache-dtype fp8 2>&1 | grep -E "output_tokens_per_s|time_per_decode"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
