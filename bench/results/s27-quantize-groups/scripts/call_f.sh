#!/bin/bash
# Session 27 call F (H200): cuBLAS block route with rows padded by the quantization (new) against an F.pad
# of the bf16 rows (old = .k4/base, 4c78b2d): qa-358 Qwen3-4B FP8 blocks + fp8 KV alternated twice, then
# compiled token-group/cublas tests and the new tree's steady-step profile.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py tests/test_fp8_rows.py -k "token_group or cublas or compile or fp8" -m "not slow" 2>&1 | tail -6 | tee $OUT/tests.log
ARGS="--workload qa-358 --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --repeat 2"
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  echo "== $t" | tee -a $OUT/log.txt
  PYTHONPATH=$P timeout -s KILL 130 python3 .k4/s27/block_bench.py $ARGS --out-dir $OUT/$t 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
done
echo "== profile new" | tee -a $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 150 python3 .k4/s27/block_profile.py block --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --top 12 2>&1 | grep -A16 "steady decode" | tee -a $OUT/log.txt
