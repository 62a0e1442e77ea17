#!/bin/bash
# Session 15 call F (H100): the per-tensor-only fp8 test's failure diagnosed; new attention test compiled (bf16).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
TRITON_INTERPRET=0 timeout -s KILL 60 python3 .k4/s15/diag_tensor.py 2>&1 | grep -v Warn | tail -5
TRITON_INTERPRET=0 timeout -s KILL 60 python3 -m pytest -q -rf --tb=line -p no:cacheprovider tests/test_kernels.py -k "fp8_cache_attention or mixed_batch" 2>&1 | tail -3
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
