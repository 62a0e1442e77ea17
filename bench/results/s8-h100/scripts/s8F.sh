#!/bin/bash
# Session 8 call F: LoRA with tag-stamped flags (no arrival count, one mapping copy): compiled tests, targets;
# then the tiles polling with an acquire load (inline PTX) instead of an acquire add of 0 (.k4/acq.patch).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU kernel tests (LoRA)"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py tests/test_lora_kernels.py 2>&1 | tail -3
step "lora_check (atomic poll)"
timeout -s KILL 220 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora.json 2>&1 | grep -vi "warn\|generate:" | tail -5
step "lora_check single (acquire-load poll)"
git apply .k4/acq.patch && timeout -s KILL 150 python3 bench/lora_check.py --skip-mixed --workloads single --num-loras 0 1 --repeat 3 --out $R/lora-acq.json 2>&1 | grep -vi "warn\|generate:" | tail -4
git apply -R .k4/acq.patch
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
