#!/bin/bash
# Session 12 calls F (H200) / G (H100): o's and down's LoRA expand in the residual RMSNorm (rank-major B).
# Compiled tests, profile, then qa-358 alternated old (.k4/norm.patch reversed) / new; the targets on the new tree.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
old() { git apply -R .k4/norm.patch; }
new() { git apply .k4/norm.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "GPU kernel tests"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_lora_fused_expand.py 2>&1 | tail -2
step "mixed batches: graphs vs eager vs torch kernels"; timeout -s KILL 150 python3 bench/lora_check.py --skip-throughput --out $R/mixed.json 2>&1 | grep -i "mixed"
step "profile new"; timeout -s KILL 120 python3 bench/profile_step.py --top 12 --lora-rank 16 > $R/profile-new.txt 2>&1; grep -v Warn $R/profile-new.txt | sed -n 1,45p
for v in old new old new; do
  [ $v = old ] && old
  step "$v qa 1 and 8 adapters"; timeout -s KILL 100 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 8 --repeat 2 --out $R/lora-$v-$SECONDS.json 2>&1 | grep "/ base"
  [ $v = old ] && new
done
step "new: the three targets"
timeout -s KILL 150 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 3 --out $R/lora-targets.json 2>&1 | grep "/ base"
git status --short | grep -v "^??"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
