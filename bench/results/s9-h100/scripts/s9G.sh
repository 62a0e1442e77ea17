#!/bin/bash
# Session 9 call G (H100): the fp8/int8 byte GEMV's occupancy: Q0 (the tree: 8192-element chunks, 87-105 registers, 2 programs
# of 8 warps an SM) vs Q1 (4096-element chunks, 8 warps: 57-70 registers) vs Q2 (Q0 capped at 80 registers) vs Q3 (2048).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
hbm() { timeout -s KILL 100 python3 bench/quant_gemv_hbm.py --formats $2 --out $R/hbm-$1.json 2>&1 | grep "one layer"; }
variant() { git apply .k4/$1.patch && hbm $1$2 fp8-channel,int8; git apply -R .k4/$1.patch; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for round in 1 2; do
step "Q0 $round"; hbm q0-$round bf16,fp8-channel,int8
step "Q1 $round"; variant q1 -$round
step "Q2 $round"; variant q2 -$round
step "Q3 $round"; variant q3 -$round
done
step "Q1 8B single"; git apply .k4/q1.patch && timeout -s KILL 170 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8 --out-dir $R/qm1 2>&1 | grep "^single" | cut -c1-200; git apply -R .k4/q1.patch
step "Q0 8B single"; timeout -s KILL 170 python3 bench/quant_models.py --model random:qwen3-8b --formats none,fp8 --out-dir $R/qm0 2>&1 | grep "^single" | cut -c1-200
git diff --stat | tail -1
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
