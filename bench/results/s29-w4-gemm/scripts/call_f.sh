#!/bin/bash
# Session 29 call F (H100): bench/quant_gemm.py --crossover for Qwen3-4B on the new tree; the compiled quantization tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 200 python3 bench/quant_gemm.py --crossover --presets qwen3-4b --out $OUT/crossover.json 2>&1 | grep -v Warn | grep crossover | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['crossover'], r['format'], r['table_key'], 'now', r['dense_from_tokens_now'], 'wins_from', r['dense_wins_from'], 'kernel', r.get('kernel_us'), 'dense', r.get('dense_us'))
" | tee -a $OUT/log.txt
timeout -s KILL 330 python3 -m pytest -q -p no:cacheprovider -x tests/test_quant_kernels.py tests/test_quant_routes.py 2>&1 | tail -15 | tee $OUT/tests.log
