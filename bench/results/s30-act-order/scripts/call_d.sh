#!/bin/bash
# Session 30 call D (H200): call C's per-layer timings and single-stream runs, without the tests.
[ -d /tmp/site/fastapi ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 200 python3 .k4/s30/act_layers.py 2>&1 | grep -v Warn | tee $OUT/act_layers.jsonl
run() {  # label, PYTHONPATH, variant, workload
  start=$(date +%s)
  PYTHONPATH=$2 timeout -s KILL 150 python3 .k4/s30/act_e2e.py $3 $4 $OUT/json > /tmp/run.txt 2>&1
  rc=$?
  echo "rc $rc $(($(date +%s)-start)) s $1: $(grep RESULT /tmp/run.txt)" | tee -a $OUT/log.txt
  [ $rc = 0 ] || tail -5 /tmp/run.txt | tee -a $OUT/log.txt
}
mkdir -p $OUT/json
run new $PWD:/tmp/site act-order-new single
run index-select $PWD/.k4/s30/base:/tmp/site act-order-new single
run row-ordered $PWD:/tmp/site gptq single
run bf16 $PWD:/tmp/site bf16 single
run old-dense $PWD:/tmp/site act-order-old single
run new $PWD:/tmp/site act-order-new 64
run bf16 $PWD:/tmp/site bf16 64
