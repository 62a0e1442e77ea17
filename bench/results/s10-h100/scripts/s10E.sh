#!/bin/bash
# Session 10 call E (H200): the LoRA expand on CUDA cores (rank column by column) vs tensor cores (tl.dot, the tree):
# per launch alone, compiled LoRA tests, qa-358 one adapter alternated (dot = .k4/s10_dot.patch), then the targets.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "expand per launch"
timeout -s KILL 100 python3 .k4/s10_expand_probe.py 2>&1 | grep -v Warn
step "GPU LoRA tests"
TRITON_INTERPRET=0 timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_lora_kernels.py tests/test_lora_shrink_programs.py tests/test_lora_small_batch.py 2>&1 | tail -1
for i in 1 2; do
  for v in dot cc; do
    [ $v = dot ] && git apply .k4/s10_dot.patch
    step "$v qa one adapter $i"; timeout -s KILL 90 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 1 --out $R/lora-$v-$i.json 2>&1 | grep "/ base"
    [ $v = dot ] && git apply -R .k4/s10_dot.patch
  done
done
git status --short | grep -v k4
step "cc: the three targets"
timeout -s KILL 200 python3 bench/lora_check.py --skip-mixed --workloads single qa-358 --num-loras 0 1 8 --repeat 2 --out $R/lora-targets.json 2>&1 | grep "/ base"
step "cc profile"; timeout -s KILL 100 python3 bench/profile_step.py --lora-rank 16 --top 8 > $R/profile-cc.txt 2>&1; sed -n '/GPU kernel time/,/decode of 1/p' $R/profile-cc.txt | head -12
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
