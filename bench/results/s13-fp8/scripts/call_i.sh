[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py tests/test_quant_small_batch.py -m "not slow" > $OUT/compiled-tests.log 2>&1; tail -2 $OUT/compiled-tests.log
timeout -s KILL 120 python3 bench/quant_gemv_hbm.py --formats fp8-channel,awq,int8 --out $OUT/gemv-hbm.json > $OUT/gemv-hbm.log 2>&1; tail -3 $OUT/gemv-hbm.log
