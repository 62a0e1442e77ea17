#!/bin/bash
# Session 7 call F (H100): merged tree. GPU tests (LoRA producers, split GEMVs), LoRA targets, byte split, 8B formats.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU tests"
TRITON_INTERPRET=0 timeout -s KILL 240 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_quant_gemv.py tests/test_small_batch_kernels.py 2>&1 | tail -6
step "profile lora"
for l in 0 16; do timeout -s KILL 90 python3 bench/profile_step.py --workload single --model random:qwen3-0.6b --lora-rank $l 2>&1 | grep -v Warn | grep -E "decode of|GPU kernel|gemv" ; done
step "lora_check"
timeout -s KILL 300 python3 bench/lora_check.py --workloads single qa-358 --num-loras 0 1 8 --out $R/lora-call-f.json 2>&1 | grep -vi warn | tail -22
step "rot bytes"
timeout -s KILL 100 python3 .k3/rot.py fp8-channel,int8 default 2>&1 | grep -A10 SUMMARY
step "quant_models 8B"
timeout -s KILL 200 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8,int8,awq --out-dir $R/qm 2>&1 | grep "^single" | cut -c1-250
date -u
} > $OUT/log.txt 2>&1
tar czf $OUT/r.tgz -C $OUT r
