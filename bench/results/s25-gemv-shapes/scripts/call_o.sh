#!/bin/bash
# Session 25 call O (H200): FP8 block (128 x 128) checkpoints, single stream: bf16 once, old (.k4/base =
# c1e847c, cap only) / new (wave tile) alternated, one process a run.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run() { PYTHONPATH=$1 timeout -s KILL 120 python3 ${@:2} 2>&1 | grep -E "tok/s|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models
for rep in 1 2; do
  echo "old block $rep"; run $OLD .k4/s24/block_model.py
  echo "new block $rep"; run $NEW .k4/s24/block_model.py --out-dir $OUT/models-block$rep
done
