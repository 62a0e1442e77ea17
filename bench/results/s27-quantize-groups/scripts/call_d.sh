#!/bin/bash
# Session 27 call D (H200): qa-358, Qwen3-4B with 128 x 128 FP8 blocks + fp8 KV, old (.k4/base) / new
# quantize_token_groups, alternated twice (--repeat 2 each); bf16 once for the ratio.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
ARGS="--workload qa-358 --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --repeat 2"
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  echo "== $t" | tee -a $OUT/log.txt
  PYTHONPATH=$P timeout -s KILL 130 python3 .k4/s27/block_bench.py $ARGS --out-dir $OUT/$t 2>&1 | grep -vi warn | tail -4 | tee -a $OUT/log.txt
done
echo "== bf16" | tee -a $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 130 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 --out-dir $OUT/bf16 2>&1 | grep -vi warn | tail -4 | tee -a $OUT/log.txt
