#!/bin/bash
# Session 24 call C (and F, G): the o -> gate|up -> down chain variants.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 300 python3 .k4/s24/chain_probe.py 2>&1 | grep -v Warn | tee $OUT/chain.log | tail -40
