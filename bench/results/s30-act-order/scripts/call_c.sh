#!/bin/bash
# Session 30 call C: act-order GPTQ with the gather inside the GEMVs. Compiled tests; per-layer timings
# (act_layers.py); end to end: the tree at 0cad570 (gather by index_select before every GEMM,
# .k4/s30/base) against this tree, with act-order as the tree before both ran it, row-ordered and bf16.
[ -d /tmp/site/fastapi ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 200 python3 -m pytest -q -p no:cacheprovider tests/test_quant_small_batch.py tests/test_quant_routes.py tests/test_quantization.py -k "act_order or act-order or desc_act" 2>&1 | tail -15 | tee -a $OUT/log.txt
timeout -s KILL 200 python3 .k4/s30/act_layers.py 2>&1 | grep -v Warn | tee $OUT/act_layers.jsonl
run() {  # label, PYTHONPATH, variant, workload
  start=$(date +%s)
  PYTHONPATH=$2 timeout -s KILL 150 python3 .k4/s30/act_e2e.py $3 $4 $OUT/json > /tmp/run.txt 2>&1
  rc=$?
  echo "rc $rc $(($(date +%s)-start)) s $1: $(grep RESULT /tmp/run.txt)" | tee -a $OUT/log.txt
  [ $rc = 0 ] || tail -5 /tmp/run.txt | tee -a $OUT/log.txt
}
mkdir -p $OUT/json  # the last run's JSON of each (workload, format) name
for w in single 64; do
  run new $PWD:/tmp/site act-order-new $w
  run index-select $PWD/.k4/s30/base:/tmp/site act-order-new $w
  run row-ordered $PWD:/tmp/site gptq $w
  run bf16 $PWD:/tmp/site bf16 $w
done
run old-dense $PWD:/tmp/site act-order-old single
run new-again $PWD:/tmp/site act-order-new single
