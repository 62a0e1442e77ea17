#!/bin/bash
# Session 15 call D (run on the deferred-scales branch): compiled tests; fp8 GEMMs incl. per-tensor without fast
# accumulation; Qwen3-4B qa-358 fp8 weights + fp8 KV: branch (inputs fused + output scales deferred), nodefer (= main:
# inputs fused), nofuse+nodefer (= before session 14), alternated; deferred + fast accum; bf16; quant_check accuracy.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
P=bench/results/s14-fp8/scripts
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "compiled tests"; TRITON_INTERPRET=0 timeout -s KILL 240 python3 -m pytest -q -p no:cacheprovider tests/test_fp8_rows.py tests/test_kernels.py tests/test_quant_routes.py tests/test_int8_kv_cache.py -k "fp8 or rms_norm or silu or scaled or route or rope" 2>&1 | tail -4
step "gemm probe"; timeout -s KILL 150 python3 $P/gemm_probe2.py $OUT/gemm_probe2.json 2>&1 | grep "layer"
Q="--workload qa-358 --model random:qwen3-4b --repeat 2"
B() { timeout -s KILL 120 python3 -m tokenmill bench $Q "$@" --no-save 2>&1 | grep -E "^output_tokens_per_s|^ratio_to_floor" | head -2; }
F="--quantization fp8 --kv-cache-dtype fp8"
step "bf16"; B
for i in 1 2; do
  step "branch $i"; B $F
  git apply $P/branch_nodefer.patch; step "nodefer (main) $i"; B $F
  git apply $P/branch_nofuse.patch; step "nofuse+nodefer (before) $i"; B $F
  git apply -R $P/branch_nofuse.patch; git apply -R $P/branch_nodefer.patch
done
git apply $P/branch_fast.patch; step "branch + fast accum"; B $F; git apply -R $P/branch_fast.patch
step "quant_check branch"; timeout -s KILL 120 python3 bench/quant_check.py --formats fp8 --out $OUT/qc-branch.json 2>&1 | tail -1
step "profile branch"; timeout -s KILL 120 python3 bench/profile_step.py --model random:qwen3-4b --top 16 $F 2>&1 | sed -n '/steady/,/decode of 1/p'
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
