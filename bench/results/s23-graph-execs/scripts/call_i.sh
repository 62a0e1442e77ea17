#!/bin/bash
# Session 23 call I (H100): one exec for every decode size (graph_update.py); the fp8 compiles in a fresh process's timed run (old tree).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
PYTHONPATH=$PWD:/tmp/site timeout -s KILL 150 python3 .k4/s23/graph_update.py random:qwen3-8b fp8 1,2,4,8,16,32,64 2>&1 | grep "UPD\|Error\|error"
mkdir -p $OUT/old-fp8
PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site timeout -s KILL 100 python3 bench/quant_models.py --formats fp8 --out-dir $OUT/old-fp8 2>&1 | grep "tok/s"
python3 -c "import json,glob; [print('COMPILES', json.load(open(f)).get('compiles_in_timed_runs')) for f in glob.glob('$OUT/old-fp8/*.json')]"
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
