#!/bin/bash
# Session 29 call E (H100): the 16-row tile's alternatives for fp8 per channel and INT8 (SMALL=1 tiles_check);
# bench/quant_gemm.py --crossover (Qwen3-8B) on the new tree; then call_d's Qwen3-8B AWQ old/new at 64 streams.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
SMALL=1 FMTS=fp8-channel,int8 TOKS=4,8,16 PYTHONPATH=$PWD:/tmp/site timeout -s KILL 100 python3 .k4/s29/tiles_check.py 2>&1 | grep -v Warn | tee $OUT/tiles_small.jsonl
PYTHONPATH=$PWD:/tmp/site timeout -s KILL 200 python3 bench/quant_gemm.py --crossover --presets qwen3-8b --out $OUT/crossover.json 2>&1 | grep -v Warn | grep crossover | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['crossover'], r['format'], r['table_key'], 'now', r['dense_from_tokens_now'], 'wins_from', r['dense_wins_from'], 'kernel', r.get('kernel_us'), 'dense', r.get('dense_us'))
" | tee -a $OUT/log.txt
STREAMS=64 WITH_BF16=64 bash .k4/s29/call_d.sh
