#!/usr/bin/env bash
# s22 call K (2 x H200): qa-358 Qwen3-0.6B DP=1 vs DP=2 (c930d45), and TP=2 8B single stream on the working tree (prefill graphs).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
NEW="$PWD/.k4/base:$PWD:/tmp/site"; TREE="$PWD:/tmp/site"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
L=$OUT; mkdir -p $L
{
Q="python3 -m tokenmill bench --workload qa-358 --model random:qwen3-0.6b"
echo "== dp1 $(date -u +%T)"; PYTHONPATH=$NEW timeout -s KILL 90 $Q > $L/dp1.log 2>&1; grep "output_tokens_per_s\|floor_tokens" $L/dp1.log
echo "== dp2 $(date -u +%T)"; PYTHONPATH=$NEW timeout -s KILL 110 $Q --data-parallel-size 2 > $L/dp2.log 2>&1; echo "rc $?"; grep "output_tokens_per_s\|floor_tokens" $L/dp2.log
echo "== tp2 tree $(date -u +%T)"; PYTHONPATH=$TREE timeout -s KILL 100 python3 -m tokenmill bench --workload single --model random:qwen3-8b --tensor-parallel-size 2 > $L/tp2-tree.log 2>&1; echo "rc $?"; grep "output_tokens_per_s\|prefill_steps\|digest" $L/tp2-tree.log
date -u
} > $L/log.txt 2>&1
cat $L/log.txt
