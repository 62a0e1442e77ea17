#!/bin/bash
# Session 26 call B (H200): one persistent launch for a layer's four 4-bit GEMVs (grid barriers) against
# the tree's four launches; bitwise check; per-layer us, weights of 8 layers rotated in one graph.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 400 python3 .k4/s26/chain.py "$@" 2>&1 | grep -v Warn | tee $OUT/chain.log | tail -40
