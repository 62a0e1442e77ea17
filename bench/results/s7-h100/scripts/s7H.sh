#!/bin/bash
# Session 7 call H (H100): LoRA arrival groups: GPU tests, profile, lora_check targets.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU tests"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py 2>&1 | tail -3
step "profile lora"
for l in 0 16; do timeout -s KILL 90 python3 bench/profile_step.py --workload single --model random:qwen3-0.6b --lora-rank $l 2>&1 | grep -v Warn | grep -E "decode of|GPU kernel|gemv" ; done
step "lora_check"
timeout -s KILL 300 python3 bench/lora_check.py --workloads single qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora-call-h.json 2>&1 | grep -vi "warn\|generate:" | tail -12
date -u
} > $OUT/log.txt 2>&1
tar czf $OUT/r.tgz -C $OUT r
