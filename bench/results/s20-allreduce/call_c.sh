#!/usr/bin/env bash
# s20 call C (one GPU): the reviewed one-way all-reduce kernel's tests compiled (ranks in turn, late words, two streams)
cd "$(dirname "$0")/../.."
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_all_reduce_kernel.py -rs --durations=4 2>&1 | tail -10
