#!/bin/bash
# Session 24 call G: FP8 block scales on fp8_gemv: compiled tests, then Qwen3-8B single stream, one process
# per run: bf16, fp8 per channel, fp8 blocks old (.k4/base) / new alternated twice.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
PYTHONPATH=$NEW timeout -s KILL 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_quant_gemv.py tests/test_quant_routes.py tests/test_quant_small_batch.py 2>&1 | tail -4 | tee $OUT/tests.log
run() { PYTHONPATH=$1 timeout -s KILL 120 python3 ${@:2} 2>&1 | grep -E "tok/s|Error|Trace" ; }
run $NEW bench/quant_models.py --formats none --out-dir $OUT/models
run $NEW bench/quant_models.py --formats fp8 --out-dir $OUT/models
for rep in 1 2; do
  echo "old block $rep"; run $OLD .k4/s24/block_model.py
  echo "new block $rep"; run $NEW .k4/s24/block_model.py --out-dir $OUT/models-block
done
