#!/bin/bash
# Session 19 call B: tile-contiguous weight layouts and programs per SM for the 1-row int4/fp8 GEMVs.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
timeout -s KILL 500 python3 .k4/s19/layout_probe.py 2>&1 | grep -v Warn | tee $OUT/layout.log | tail -80
