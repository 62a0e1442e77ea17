[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
TRITON_INTERPRET=0 timeout 150 python3 -m pytest -q tests/test_int4_mma.py -k "not compiles" --tb=short -rf 2>&1 | grep -v "^\.\|passed\b" | tail -40 | tee $OUT/tests.log
mkdir -p $OUT/mma
timeout 170 python3 .k4/s18/ab_models.py --formats none,awq --workload single --out-dir $OUT/mma 2>&1 | grep -v Warning | tail -2 | tee -a $OUT/models.log
timeout 170 python3 .k4/s18/ab_models.py --formats awq --workload batch-8 --out-dir $OUT/mma 2>&1 | grep -v Warning | tail -1 | tee -a $OUT/models.log
