#!/bin/bash
# Session 28 call C: FP8 block GEMM probe modes (0 scaled, 1 unscaled ceiling, 2 manual pipeline, 3 two blocks a step).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 250 python3 .k4/s28/block_probe.py 4b 358,2048 2>&1 | grep -v Warn > $OUT/probe4b.jsonl
timeout -s KILL 150 python3 .k4/s28/block_probe.py 8b 358 2>&1 | grep -v Warn > $OUT/probe8b.jsonl
python3 .k4/s28/summ.py $OUT
