[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L
timeout -s KILL 200 python3 bench/profile_step.py --workload single --model random:qwen3-8b --quantization fp8 --top 15 > $OUT/profile-fp8.log 2>&1; tail -40 $OUT/profile-fp8.log
timeout -s KILL 200 python3 bench/profile_step.py --workload single --model random:qwen3-8b --top 15 > $OUT/profile-bf16.log 2>&1; tail -25 $OUT/profile-bf16.log
