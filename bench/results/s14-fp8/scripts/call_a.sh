#!/bin/bash
# Session 14 call A (H100): fp8 GEMMs at qa-358 sizes (rowwise fast accum off/on, per-tensor), and Qwen3-4B qa-358
# fp8 weights + fp8 KV with fast accumulation off/on alternated, bf16 for the ratio, a step profile with it on.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "gemm probe"; timeout -s KILL 150 python3 bench/results/s14-fp8/scripts/gemm_probe.py $OUT/gemm_probe.json 2>&1 | grep -v Warn
Q="--workload qa-358 --model random:qwen3-4b --repeat 2"
step "bf16"; timeout -s KILL 120 python3 -m tokenmill bench $Q --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2
for i in 1 2; do
  step "fp8+fp8kv tree $i"; timeout -s KILL 120 python3 -m tokenmill bench $Q --quantization fp8 --kv-cache-dtype fp8 --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2
  git apply bench/results/s14-fp8/scripts/fast_accum_calls_a_b.patch
  step "fp8+fp8kv fast accum $i"; timeout -s KILL 120 python3 -m tokenmill bench $Q --quantization fp8 --kv-cache-dtype fp8 --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2
  git apply -R bench/results/s14-fp8/scripts/fast_accum_calls_a_b.patch
done
git apply bench/results/s14-fp8/scripts/fast_accum_calls_a_b.patch
step "profile fast accum"; timeout -s KILL 120 python3 bench/profile_step.py --model random:qwen3-4b --top 20 --quantization fp8 --kv-cache-dtype fp8 2>&1 | sed -n '/steady/,/decode of 1/p'
git apply -R bench/results/s14-fp8/scripts/fast_accum_calls_a_b.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
