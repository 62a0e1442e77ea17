#!/bin/bash
# Session 28 calls F (H200) and G (H100): the final fp8_block_gemm (fp8-typed operands, masked rows, decode
# tile at 4 stages) against the old tree (.k4/s28/base = e673852), alternated twice; compiled FP8-block
# tests; qa-358 Qwen3-4B FP8 blocks + fp8 KV on the Triton route (old / new) and on the cuBLAS route (new).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/s28/base:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  PYTHONPATH=$P timeout -s KILL 100 python3 .k4/s28/gemm_ab.py $t 2>&1 | grep -v Warn | tee -a $OUT/gemm_ab.jsonl
done
PYTHONPATH=$NEW timeout -s KILL 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py -k "fp8_block or fp8_checkpoint or cublas or layers_on" 2>&1 | tail -3 | tee $OUT/tests.log
ARGS="--workload qa-358 --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --repeat 2"
for t in old new cublas-new; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  R=1; [[ $t == cublas* ]] && R=0
  echo "== $t (TRITON_ROUTE=$R)" | tee -a $OUT/log.txt
  PYTHONPATH=$P TRITON_ROUTE=$R timeout -s KILL 140 python3 .k4/s28/block_bench_triton.py $ARGS --out-dir $OUT/$t 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
done
