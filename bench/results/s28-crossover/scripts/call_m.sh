#!/bin/bash
# Session 28 calls M (H200) and N (H100): the new DENSE_FROM_TOKENS against the old (OLD_TABLE=1), same tree:
# Qwen3-8B AWQ (quantized at load), 96 streams of 128-token prompts and 256 tokens out (decode batches of
# 96: the dense route now, the kernel's 128 x 128 tile before), alternated twice; Qwen3-4B 128 x 128 FP8
# blocks, 48 streams (decode batches of 48: the Triton kernel now, cuBLAS's block GEMM before), once each.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
AWQ="--workload custom --num-prompts 96 --input-len 128 --output-len 256 --model random:qwen3-8b --quantization awq"
for t in old new old2 new2; do
  O=0; [[ $t == old* ]] && O=1
  echo "== awq $t" | tee -a $OUT/log.txt
  OLD_TABLE=$O timeout -s KILL 200 python3 .k4/s28/route_bench.py $AWQ --out-dir $OUT/awq-$t 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
done
BLK="--workload custom --num-prompts 48 --input-len 128 --output-len 256 --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8"
for t in old new; do
  O=0; [[ $t == old* ]] && O=1
  echo "== fp8-blocks $t" | tee -a $OUT/log.txt
  BLOCKS=1 OLD_TABLE=$O timeout -s KILL 150 python3 .k4/s28/route_bench.py $BLK --out-dir $OUT/blocks-$t 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
done
if [ -n "$WITH_BF16" ]; then
  echo "== bf16 8b 96 streams" | tee -a $OUT/log.txt
  timeout -s KILL 150 python3 -m tokenmill bench --workload custom --num-prompts 96 --input-len 128 --output-len 256 --model random:qwen3-8b --out-dir $OUT/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
fi
