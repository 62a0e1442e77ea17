#!/bin/bash
# Session 23 calls G (H200) and H (H100): prefill graphs kept within three graph execs. Step times, old tree (b763451) vs new alternated in quant_models, gpu_check on the new; on the H100 also the graph-exec rule (graph_alive, graph_threshold).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $1 ($(date -u +%T))"; }
old() { PYTHONPATH=$PWD/.k4/base:$PWD:/tmp/site "$@"; }
new() { PYTHONPATH=$PWD:/tmp/site "$@"; }
{
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if [ "$1" = rule ]; then
step "graph rule"; old timeout -s KILL 100 python3 .k4/s23/graph_alive.py alive 2>&1 | grep "ALV\|Error"
old timeout -s KILL 100 python3 .k4/s23/graph_threshold.py sweep 1 10 40 2>&1 | grep "THR\|Error"
fi
step "step times new"; new timeout -s KILL 150 python3 bench/step_times.py --out $OUT/step-times-new.json 2>&1 | grep -v Warn | grep " us \|Error\|error"
for i in 1 2; do
mkdir -p $OUT/old$i $OUT/new$i
step "old $i"; old timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/old$i 2>&1 | grep -v Warn | grep "tok/s"
step "new $i"; new timeout -s KILL 150 python3 bench/quant_models.py --formats none,fp8,awq --out-dir $OUT/new$i 2>&1 | grep -v Warn | grep "tok/s\|Error\|error"
done
step "gpu_check new"; TRITON_INTERPRET=0 new timeout -s KILL 200 python3 bench/gpu_check.py --out $OUT/gpu-check.json > $OUT/gpu-check.log 2>&1; echo "exit $?"; grep -i "passed\|fail\|exact\|agree" $OUT/gpu-check.log | head -20
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
