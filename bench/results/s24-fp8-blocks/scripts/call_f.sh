#!/bin/bash
# Session 24 call F: FP8 block-scaled decode, kernel level (tree vs swap-AB) and model level (one process each).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 200 python3 .k4/s24/block_probe.py 2>&1 | grep -v Warn | tee $OUT/block.log | grep -E "BEST|failed|Trace|Error|tree" | tail -20
for f in none fp8; do timeout -s KILL 120 python3 bench/quant_models.py --formats $f --out-dir $OUT/models 2>&1 | grep -E "tok/s|Error" ; done
timeout -s KILL 150 python3 .k4/s24/block_model.py --out-dir $OUT/models-block 2>&1 | grep -E "tok/s|Error|Trace" | sed 's/ fp8 / fp8-block /'
