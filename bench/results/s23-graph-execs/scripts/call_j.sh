#!/bin/bash
# Session 23 call J (H100): the prompt-variant warm-up. fp8 in fresh processes: batch-8 (its timed run's prefix-cached 8 x 16-token prompts run eagerly) old (b763451) and new; single new.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
nvidia-smi --query-gpu=name --format=csv,noheader
for t in old new; do
  if [ $t = old ]; then P=$PWD/.k4/base:$PWD:/tmp/site; else P=$PWD:/tmp/site; fi
  mkdir -p $OUT/$t
  echo "=== $t batch-8 fp8"; PYTHONPATH=$P timeout -s KILL 120 python3 bench/quant_models.py --formats fp8 --workload batch-8 --out-dir $OUT/$t 2>&1 | grep "tok/s\|Error"
  python3 -c "import json,glob; [print('COMPILES', json.load(open(f)).get('compiles_in_timed_runs')) for f in glob.glob('$OUT/$t/*.json')]" | cut -c1-400
done
echo "=== new single fp8"; PYTHONPATH=$PWD:/tmp/site timeout -s KILL 100 python3 bench/quant_models.py --formats fp8 2>&1 | grep "tok/s\|Error"
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
