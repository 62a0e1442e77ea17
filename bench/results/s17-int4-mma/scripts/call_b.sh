[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
timeout 300 python3 .k4/s17/rows_probe.py 2>&1 | tee $OUT/rows_probe.log | tail -30
