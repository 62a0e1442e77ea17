#!/bin/bash
# Session 25 call C: the 4-bit GEMV in wide steps: per-projection (old/new/sweep), compiled tests,
# Qwen3-8B AWQ single stream old/new alternated (one process a run), bf16 once.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
PYTHONPATH=$OLD timeout -s KILL 100 python3 .k4/s25/shapes.py old 2>&1 | grep -v Warn > $OUT/shapes-old.log
PYTHONPATH=$NEW timeout -s KILL 200 python3 .k4/s25/shapes.py new 2>&1 | grep -v Warn > $OUT/shapes-new.log
PYTHONPATH=$OLD timeout -s KILL 100 python3 .k4/s25/shapes.py old2 2>&1 | grep -v Warn > $OUT/shapes-old2.log
grep -hE "default|BEST|failed|Error" $OUT/shapes-*.log | grep -v '"shape"'
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_gemv.py -k "4_bit or awq or split" 2>&1 | tail -3 | tee $OUT/tests.log
