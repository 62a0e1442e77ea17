#!/bin/bash
# Session 28 call E: small batches (wrap/mask rows, stages) of the new kernel; qa-358 Qwen3-4B FP8 blocks +
# fp8 KV on the Triton route (cuBLAS blocks declined, as on sm_89/sm_120): old (.k4/s28/base) / new.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/s28/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 100 python3 .k4/s28/small_ab.py 2>&1 | grep -v Warn | tee -a $OUT/small_ab.jsonl
ARGS="--workload qa-358 --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --repeat 2"
for t in old new; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  echo "== $t (Triton route)" | tee -a $OUT/log.txt
  PYTHONPATH=$P TRITON_ROUTE=1 timeout -s KILL 150 python3 .k4/s28/block_bench_triton.py $ARGS --out-dir $OUT/$t 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
done
