#!/bin/bash
# Session 30 call F (H100): AWQ single stream, the tree before this session (git archive b071cd9, in
# .k4/s30/base29) against this one (ec58f0f), alternated twice (bench/quant_models.py --formats awq).
[ -d /tmp/site/fastapi ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for round in 1 2; do
  (cd .k4/s30/base29 && PYTHONPATH=$PWD:/tmp/site timeout -s KILL 100 python3 bench/quant_models.py --formats awq 2>&1 | grep -E "^single" | sed 's/^/old /' | tee -a $OUT/log.txt)
  PYTHONPATH=$PWD:/tmp/site timeout -s KILL 100 python3 bench/quant_models.py --formats awq 2>&1 | grep -E "^single" | sed 's/^/new /' | tee -a $OUT/log.txt
done
