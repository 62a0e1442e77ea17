#!/bin/bash
# Session 11 calls G (H200) and H (H100), after the review's fixes (for loop, where-masked slots, fallback above rank 32 or 4 parts): probe, compiled tests, the three LoRA targets,
# qa-358 alternated with the tree before the change (.k4/fused2.patch reversed).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/fused2.patch; }
new() { git apply .k4/fused2.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "probe"; timeout -s KILL 100 python3 .k4/s11_probe3.py 2>&1 | grep -v Warn
step "GPU kernel tests"
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_lora_fused_expand.py tests/test_lora_kernels.py 2>&1 | tail -2
step "new: the three targets"
timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 2 --out $R/lora-targets.json 2>&1 | grep "/ base"
for v in old new; do
  [ $v = old ] && old
  step "$v qa 1 and 8 adapters"; timeout -s KILL 100 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 8 --out $R/lora-$v.json 2>&1 | grep "/ base"
  [ $v = old ] && new
done
git status --short | grep -v "^??"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
