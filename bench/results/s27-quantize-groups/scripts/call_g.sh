#!/bin/bash
# Session 27 call G (H100): qa-358 Qwen3-4B FP8 blocks + fp8 KV, 9c87244 (one program a 128-group, F.pad)
# against cd9f239 (this session's quantization: several groups a program, padded rows), alternated twice;
# bf16 once; compiled token-group/cublas tests.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
NEW=$PWD:/tmp/site OLD=$PWD/.k4/s27/base9c:$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_kernels.py tests/test_fp8_rows.py -k "token_group or cublas or compile or fp8" -m "not slow" 2>&1 | tail -6 | tee $OUT/tests.log
ARGS="--workload qa-358 --model random:qwen3-4b --quantization fp8 --kv-cache-dtype fp8 --repeat 2"
for t in old new old2 new2; do
  P=$NEW; [[ $t == old* ]] && P=$OLD
  echo "== $t" | tee -a $OUT/log.txt
  PYTHONPATH=$P timeout -s KILL 130 python3 .k4/s27/block_bench.py $ARGS --out-dir $OUT/$t 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
done
echo "== bf16" | tee -a $OUT/log.txt
PYTHONPATH=$NEW timeout -s KILL 130 python3 -m tokenmill bench --workload qa-358 --model random:qwen3-4b --repeat 2 --out-dir $OUT/bf16 2>&1 | grep -E "output_tokens_per_s|time_per_decode|output_digest|Error|Trace" | tee -a $OUT/log.txt
