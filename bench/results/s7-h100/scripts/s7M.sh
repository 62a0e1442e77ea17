#!/bin/bash
# Session 7 call M (2 x H200): rank 0's kernel table, Qwen3-8B single stream, TP=2 (and TP=1 beside it).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
for tp in 2 1; do echo "=== TP=$tp ($(date -u +%T))"
timeout -s KILL 200 python3 bench/profile_step.py --workload single --model random:qwen3-8b --tensor-parallel-size $tp 2>&1 | grep -v Warn | grep -E "decode of|GPU kernel|^ +[0-9]" | head -24; done
date -u
} > $OUT/log.txt 2>&1
