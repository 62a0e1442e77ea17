#!/bin/bash
# Session 14 call B: Triton W8A8 per-channel fp8 GEMM tilings vs torch._scaled_mm (rowwise fast accum, per-tensor);
# quant_check fp8 with fast accumulation off/on.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "fp8mm probe"; timeout -s KILL 300 python3 bench/results/s14-fp8/scripts/fp8mm_probe.py $OUT/fp8mm_probe.json 2>&1 | grep -v Warn
step "quant_check tree"; timeout -s KILL 120 python3 bench/quant_check.py --formats fp8 --out $OUT/qc-tree.json 2>&1 | tail -4
git apply bench/results/s14-fp8/scripts/fast_accum_calls_a_b.patch
step "quant_check fast accum"; timeout -s KILL 120 python3 bench/quant_check.py --formats fp8 --out $OUT/qc-fast.json 2>&1 | tail -4
git apply -R bench/results/s14-fp8/scripts/fast_accum_calls_a_b.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
