#!/bin/bash
# Session 28 calls K (H200) and L (H100): bench/quant_gemm.py --crossover on the new tree: where each
# format's dense route starts to win (fp8-block-cublas: cuBLAS's block-scaled GEMM against the Triton kernel).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 540 python3 bench/quant_gemm.py --crossover --presets qwen3-8b,qwen3-4b --out $OUT/crossover.json 2>&1 | grep -v Warn | grep crossover | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['crossover'], r['format'], r['table_key'], 'now', r['dense_from_tokens_now'], 'wins_from', r['dense_wins_from'], 'kernel', r.get('kernel_us'), 'dense', r.get('dense_us'))
" | tee -a $OUT/log.txt
