set -x
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L
timeout -s KILL 200 python3 .k4/fp8probe.py qwen3-8b $OUT/probe-8b.json > $OUT/probe-8b.log 2>&1
grep -v '^{' $OUT/probe-8b.log | tail -16
timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8 > $OUT/ss-new1.log 2>&1; grep "tok/s" $OUT/ss-new1.log | tail -2
TM_FP8_PDL=1 timeout -s KILL 100 python3 bench/quant_models.py --formats fp8 > $OUT/ss-pdl1.log 2>&1; grep "tok/s" $OUT/ss-pdl1.log | tail -1
git apply -R .k4/route.patch && timeout -s KILL 100 python3 bench/quant_models.py --formats fp8 > $OUT/ss-old.log 2>&1; grep "tok/s" $OUT/ss-old.log | tail -1
git apply .k4/route.patch && timeout -s KILL 100 python3 bench/quant_models.py --formats fp8 > $OUT/ss-new2.log 2>&1; grep "tok/s" $OUT/ss-new2.log | tail -1
TM_FP8_PDL=1 timeout -s KILL 100 python3 bench/quant_models.py --formats fp8 > $OUT/ss-pdl2.log 2>&1; grep "tok/s" $OUT/ss-pdl2.log | tail -1
