#!/bin/bash
# Session 10 call C (H200): LoRA expand/shrink with a two-round dependency chain (new) vs the tree before it (old,
# .k4/s10_expand.patch reversed): compiled LoRA tests, qa-358 step profile, qa-358 one adapter alternated, then the
# three LoRA targets on the new kernels.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/s10_expand.patch; }
new() { git apply .k4/s10_expand.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU kernel tests (new)"
TRITON_INTERPRET=0 timeout -s KILL 120 python3 -m pytest -q -p no:cacheprovider tests/test_lora_kernels.py tests/test_lora_shrink_programs.py 2>&1 | tail -1
for v in new old; do
  [ $v = old ] && old
  step "$v profile"; timeout -s KILL 100 python3 bench/profile_step.py --lora-rank 16 --top 8 > $R/profile-$v.txt 2>&1; sed -n '/GPU kernel time/,/decode of 1/p' $R/profile-$v.txt | head -12
  [ $v = old ] && new
done
for i in 1 2; do
  for v in old new; do
    [ $v = old ] && old
    step "$v qa one adapter $i"; timeout -s KILL 90 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --out $R/lora-$v-$i.json 2>&1 | grep "/ base"
    [ $v = old ] && new
  done
done
git status --short
step "new: the three targets"
timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 2 --out $R/lora-targets.json 2>&1 | grep "/ base"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
