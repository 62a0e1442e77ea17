[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
TRITON_INTERPRET=0 timeout 240 python3 -m pytest -q tests/test_int4_mma.py tests/test_quant_gemv.py tests/test_quant_small_batch.py tests/test_quant_routes.py -k "not compile" --tb=short -rf -p no:cacheprovider 2>&1 | grep -v "^\.*$" | tail -25 | tee $OUT/tests.log
timeout 150 python3 bench/quant_check.py --formats awq --out $OUT/quant_check_awq.json 2>&1 | grep -v Warning | tail -4 | tee $OUT/quant_check.log
mkdir -p $OUT/mma
timeout 170 python3 .k4/s18/ab_models.py --formats none,awq --workload batch-8 --out-dir $OUT/mma 2>&1 | grep -v Warning | tail -2 | tee $OUT/models.log
