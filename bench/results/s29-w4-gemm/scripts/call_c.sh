#!/bin/bash
# Session 29 call C (H200): the new weight_only_gemm (y^T = W x^T, group scales folded into the weights):
# compiled tests of the weight-only GEMM and routes; the tile check; bench/quant_gemm.py --crossover (Qwen3-8B).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py -k "weight_only or 16_bit or tuning or dequantize or gptq or awq or int8" 2>&1 | tail -5 | tee $OUT/tests.log
timeout -s KILL 120 python3 .k4/s29/tiles_check.py 2>&1 | grep -v Warn | tee $OUT/tiles_check.jsonl
timeout -s KILL 260 python3 bench/quant_gemm.py --crossover --presets qwen3-8b --out $OUT/crossover.json 2>&1 | grep -v Warn | grep crossover | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['crossover'], r['format'], r['table_key'], 'now', r['dense_from_tokens_now'], 'wins_from', r['dense_wins_from'], 'kernel', r.get('kernel_us'), 'dense', r.get('dense_us'))
" | tee -a $OUT/log.txt
