#!/bin/bash
# Session 7 call G (H100): GPU tests after fixes; LoRA sync diagnosis; 8B AWQ kernel table.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU tests"
TRITON_INTERPRET=0 timeout -s KILL 240 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_quant_gemv.py tests/test_small_batch_kernels.py 2>&1 | tail -4
for v in 0 1 2 3; do step "lora variant $v"
timeout -s KILL 90 python3 .k3/lora_micro.py $v 2>&1 | grep -E "decode of|GPU kernel|gemv_kernel" ; done
step "8B awq single"
timeout -s KILL 150 python3 bench/profile_step.py --workload single --model random:qwen3-8b --quantization awq 2>&1 | grep -v Warn | grep -E "decode of|GPU kernel|^ +[0-9]" | head -8
date -u
} > $OUT/log.txt 2>&1
