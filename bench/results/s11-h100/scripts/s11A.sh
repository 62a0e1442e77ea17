#!/bin/bash
# Session 11 call A: the LoRA expand folded into SiLU-and-mul and the residual RMSNorm (new) vs the tree before
# it (old: .k4/fused.patch reversed): per-launch probe, compiled tests, step profiles, qa-358 alternated, mixed check.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/fused.patch; }
new() { git apply .k4/fused.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "probe"; timeout -s KILL 150 python3 .k4/s11_probe.py 2>&1 | grep -v Warn
step "GPU kernel tests (new)"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_lora_fused_expand.py tests/test_lora_kernels.py tests/test_kernels.py 2>&1 | tail -2
for v in new old; do
  [ $v = old ] && old
  step "$v profile"; timeout -s KILL 100 python3 bench/profile_step.py --lora-rank 16 --top 12 > $R/profile-$v.txt 2>&1; sed -n '/GPU kernel time/,/decode of 1/p' $R/profile-$v.txt | head -16
  [ $v = old ] && new
done
for i in 1 2; do
  for v in old new; do
    [ $v = old ] && old
    step "$v qa one adapter $i"; timeout -s KILL 90 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --out $R/lora1-$v-$i.json 2>&1 | grep "/ base"
    [ $v = old ] && new
  done
done
for v in old new; do
  [ $v = old ] && old
  step "$v qa 8 adapters"; timeout -s KILL 90 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 8 --out $R/lora8-$v.json 2>&1 | grep "/ base"
  [ $v = old ] && new
done
git status --short
step "mixed check (new)"; timeout -s KILL 150 python3 bench/lora_check.py --skip-throughput --out $R/mixed.json 2>&1 | tail -12
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
