[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
TRITON_INTERPRET=0 timeout 120 python3 -m pytest -q -x tests/test_int4_mma.py -k "not compiles" 2>&1 | tail -2 | tee $OUT/tests.log
timeout 100 python3 .k4/s18/mma_rows.py 1,2,8,16 2>&1 | grep "per layer" | tee $OUT/mma_rows.log
mkdir -p $OUT/mma $OUT/tree
timeout 200 python3 .k4/s18/ab_models.py --formats none,awq --workload batch-8 --out-dir $OUT/mma 2>&1 | grep -v Warning | tail -2 | tee $OUT/models.log
timeout 100 python3 .k4/s18/ab_models.py --tree --formats awq --workload batch-8 --out-dir $OUT/tree 2>&1 | grep -v Warning | tail -1 | tee -a $OUT/models.log
timeout 150 python3 .k4/s18/ab_models.py --formats none,awq --workload single --out-dir $OUT/mma 2>&1 | grep -v Warning | tail -2 | tee -a $OUT/models.log
