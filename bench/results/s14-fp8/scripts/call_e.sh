#!/bin/bash
# Session 14 call E (deferred-scales branch, two-pass SiLU-and-mul quantize): which compiled tests fail; Qwen3-4B
# qa-358 fp8 + fp8 KV: branch / nodefer / nofuse+nodefer, fast accum; a step profile.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
P=bench/results/s14-fp8/scripts
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
Q="--workload qa-358 --model random:qwen3-4b --repeat 2"
B() { timeout -s KILL 120 python3 -m tokenmill bench $Q "$@" --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2; }
F="--quantization fp8 --kv-cache-dtype fp8"
step "bf16"; B
step "branch 1"; B $F
git apply $P/branch_nodefer.patch; step "nodefer 1"; B $F
git apply $P/branch_nofuse.patch; step "nofuse+nodefer 1"; B $F
git apply -R $P/branch_nofuse.patch; git apply -R $P/branch_nodefer.patch
step "branch 2"; B $F
git apply $P/branch_fast.patch; step "branch + fast accum"; B $F; git apply -R $P/branch_fast.patch
step "profile branch"; timeout -s KILL 100 python3 bench/profile_step.py --model random:qwen3-4b --top 12 $F 2>&1 | sed -n '/steady/,/decode of 1/p'
step "compiled tests"; TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -rf --tb=line -p no:cacheprovider tests/test_fp8_rows.py tests/test_kernels.py tests/test_quant_routes.py tests/test_int8_kv_cache.py -k "fp8 or rms_norm or silu or scaled or route or rope" > $OUT/tests.log 2>&1; grep -E "^FAILED|^/.*Error|^E |passed|failed" $OUT/tests.log | head -60
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
