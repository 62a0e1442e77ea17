#!/bin/bash
# Session 14 call C: fp8 activations written by the RMSNorm / SiLU-and-mul (Fp8Rows). Compiled tests; Qwen3-4B qa-358
# fp8 weights + fp8 KV with the producers quantizing (tree) and not (no_fusion.patch), alternated; fast accum on top;
# bf16 for the ratio; a step profile of the tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled tests"; TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_fp8_rows.py tests/test_kernels.py -k "fp8_rows or rms_norm or silu or quantiz" 2>&1 | tail -3
Q="--workload qa-358 --model random:qwen3-4b --repeat 2"
B() { timeout -s KILL 120 python3 -m tokenmill bench $Q "$@" --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2; }
step "bf16"; B
for i in 1 2; do
  step "fp8+fp8kv fused $i"; B --quantization fp8 --kv-cache-dtype fp8
  git apply bench/results/s14-fp8/scripts/no_fusion.patch
  step "fp8+fp8kv unfused $i"; B --quantization fp8 --kv-cache-dtype fp8
  git apply -R bench/results/s14-fp8/scripts/no_fusion.patch
done
git apply bench/results/s14-fp8/scripts/fast_accum_call_c.patch
step "fp8+fp8kv fused + fast accum"; B --quantization fp8 --kv-cache-dtype fp8
git apply -R bench/results/s14-fp8/scripts/fast_accum_call_c.patch
step "bf16 again"; B
step "profile fused"; timeout -s KILL 120 python3 bench/profile_step.py --model random:qwen3-4b --top 14 --quantization fp8 --kv-cache-dtype fp8 2>&1 | sed -n '/steady/,/decode of 1/p'
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
