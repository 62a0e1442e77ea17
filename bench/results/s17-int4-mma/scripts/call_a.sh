set -x
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 .k4/s17/mma_probe.py 2>&1 | tee $OUT/mma_probe.log | grep -v '"check"' | tail -80
grep '"check"' $OUT/mma_probe.log | head -60
