#!/bin/bash
# Session 23 calls G2 (H200) and H (H100): prefill graphs within three graph execs, one process per format (graph execs count per process). Step times of the new tree, old tree (b763451) vs new alternated twice in quant_models; on the H100 first the graph-exec rule (graph_alive, graph_threshold).
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
for f in none fp8 awq; do step "step times new $f"; new timeout -s KILL 100 python3 bench/step_times.py --formats $f --out $OUT/step-times-new-$f.json 2>&1 | grep -v Warn | grep " us \|Error\|error"; done
for i in 1 2; do for f in none fp8 awq; do
step "old $i"; old timeout -s KILL 100 python3 bench/quant_models.py --formats $f --out-dir $OUT/q 2>&1 | grep -v Warn | grep "tok/s"
step "new $i"; new timeout -s KILL 100 python3 bench/quant_models.py --formats $f --out-dir $OUT/q 2>&1 | grep -v Warn | grep "tok/s\|Error\|error"
done; done
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
