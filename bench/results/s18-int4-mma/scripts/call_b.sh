[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
TRITON_INTERPRET=0 timeout 200 python3 -m pytest -q -x tests/test_int4_mma.py 2>&1 | tail -15 | tee $OUT/tests.log
timeout 250 python3 .k4/s18/mma_rows.py 1,2,4,8,16 2>&1 | tee $OUT/mma_rows.log | tail -30
