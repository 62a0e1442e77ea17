#!/bin/bash
# Session 10 call D (H200): the LoRA expand alone (per launch, warps), Nsight Compute on it and on add_rms_norm;
# qa-358 with 8 adapters again (call C gave 0.744 against 0.819 last session).
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "expand per launch"
timeout -s KILL 120 python3 .k4/s10_expand_probe.py 2>&1 | grep -v Warn
step "ncu"
timeout -s KILL 150 ncu --set full -k regex:"_expand_kernel|_add_rms_norm" -c 5 python3 .k4/s10_expand_probe.py --ncu > $R/ncu.txt 2>&1; echo rc=$?
grep -E "^  _|Duration|DRAM Throughput|L2 Cache Throughput|Achieved Occupancy|Registers Per Thread|Grid Size|Block Size|Warp Cycles Per Issued|Theoretical Occupancy|Compute \(SM\) Throughput|Executed Ipc Active" $R/ncu.txt | head -80
grep -E "Est. Speedup|stall|Stall" $R/ncu.txt | head -30
step "qa-358 8 adapters"
timeout -s KILL 150 python3 bench/lora_check.py --skip-mixed --workloads qa-358 --num-loras 0 8 --repeat 2 --out $R/lora8.json 2>&1 | grep "/ base"
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
