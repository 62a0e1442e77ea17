#!/bin/bash
# Session 11 calls C (H200) and D (H100): gate|up's LoRA expand folded into SiLU-and-mul (new) vs the tree before it
# (old: .k4/fused.patch reversed): compiled tests, the three LoRA targets on new, qa-358 alternated old/new.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/fused.patch; }
new() { git apply .k4/fused.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU kernel tests (new)"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_lora_fused_expand.py tests/test_lora_kernels.py tests/test_lora_small_batch.py tests/test_lora_shrink_programs.py 2>&1 | tail -2
step "new profile"; timeout -s KILL 100 python3 bench/profile_step.py --lora-rank 16 --top 12 > $R/profile-new.txt 2>&1; sed -n '/GPU kernel time/,/decode of 1/p' $R/profile-new.txt | head -8
step "new: the three targets"
timeout -s KILL 220 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 2 --out $R/lora-targets.json 2>&1 | grep "/ base"
for i in 1 2; do
  for v in old new; do
    [ $v = old ] && old
    step "$v qa 1 and 8 adapters $i"; timeout -s KILL 100 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 8 --out $R/lora-$v-$i.json 2>&1 | grep "/ base"
    [ $v = old ] && new
  done
done
git status --short | grep -v "^??"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
