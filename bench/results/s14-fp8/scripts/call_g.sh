#!/bin/bash
# Session 14 call G: test_fp8_rows compiled on the branch.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
TRITON_INTERPRET=0 timeout -s KILL 110 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_fp8_rows.py -m "not slow" > $OUT/tests.log 2>&1
grep -E "^FAILED|Error|^E |passed|failed" $OUT/tests.log | head -40
