#!/bin/bash
# Session 7 call I (H200): final tree. gpu_check; 8B single per format; LoRA targets; int4 GEMV microbench.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "gpu_check"
timeout -s KILL 200 python3 bench/gpu_check.py --out $R/gpu-check.json > $OUT/gpu_check.txt 2>&1; echo "rc=$?"; grep -iE "passed|fail|exact" $OUT/gpu_check.txt | head -6
step "quant_models 8B"
timeout -s KILL 260 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8,int8,awq,gptq --out-dir $R/qm 2>&1 | grep "^single" | cut -c1-250
step "lora_check"
timeout -s KILL 240 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora.json 2>&1 | grep -vi "warn\|generate:" | tail -8
step "rot gptq4 + bf16"
timeout -s KILL 100 python3 .k3/rot.py bf16,gptq4,fp8-channel default 2>&1 | grep -A14 SUMMARY
date -u
} > $OUT/log.txt 2>&1
tar czf $OUT/r.tgz -C $OUT r
