#!/bin/bash
# Session 29 calls D (H200) / E (H100): Qwen3-8B AWQ (quantized at load), STREAMS streams of 128-token prompts,
# 256 tokens out: the tree before this session (.k4/s29/base = git archive 2932a36) against the new one, alternated;
# bf16 at the same load once.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $OUT/log.txt
ROOT=$PWD
run() {  # name tree streams [quant]
  local q=""; [ -n "$4" ] && q="--quantization $4"
  echo "== $1 streams=$3" | tee -a $OUT/log.txt
  (cd $2 && PYTHONPATH=$PWD:/tmp/site timeout -s KILL 150 python3 -m tokenmill bench --workload custom --num-prompts $3 --input-len 128 --output-len 256 --model random:qwen3-8b $q --out-dir $OUT/$1-$3) 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|compiles_in|Error|Trace" | tee -a $OUT/log.txt
}
for s in ${STREAMS:-64 96}; do
  run old $ROOT/.k4/s29/base $s awq
  run new $ROOT $s awq
  run old2 $ROOT/.k4/s29/base $s awq
  run new2 $ROOT $s awq
done
[ -n "$WITH_BF16" ] && run bf16 $ROOT $WITH_BF16
