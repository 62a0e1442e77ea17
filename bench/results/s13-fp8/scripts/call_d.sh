[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L
TRITON_INTERPRET=0 timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_gemv.py tests/test_quant_small_batch.py -m "not slow" > $OUT/compiled-tests.log 2>&1; tail -2 $OUT/compiled-tests.log
timeout -s KILL 120 python3 bench/quant_gemv_hbm.py --formats bf16,fp8-channel --out $OUT/gemv-hbm.json > $OUT/gemv-hbm.log 2>&1; tail -2 $OUT/gemv-hbm.log
mkdir -p $OUT/json
timeout -s KILL 200 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/json > $OUT/ss-new1.log 2>&1; grep "tok/s" $OUT/ss-new1.log | tail -3
git apply .k4/old_route.patch && timeout -s KILL 90 python3 bench/quant_models.py --formats fp8 > $OUT/ss-old.log 2>&1; grep "tok/s" $OUT/ss-old.log | tail -1
git apply -R .k4/old_route.patch && timeout -s KILL 90 python3 bench/quant_models.py --formats fp8 > $OUT/ss-new2.log 2>&1; grep "tok/s" $OUT/ss-new2.log | tail -1
timeout -s KILL 90 python3 bench/quant_models.py --formats none > $OUT/ss-bf16-2.log 2>&1; grep "tok/s" $OUT/ss-bf16-2.log | tail -1
