#!/bin/bash
# Session 25 call B: ncu of the 1-row 4-bit GEMVs and fp8_gemv.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s KILL 400 ncu --set full -k regex:"_int4_gemv_kernel|_nm_kernel|_kp_kernel|_fp8_gemv_kernel" python3 .k4/s25/ncu_probe.py > $OUT/ncu.txt 2>&1; echo rc=$?
grep -E "^  _|Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Issued Ipc|No Eligible|Block Limit Reg|Grid Size|Warp Cycles Per Issued|Executed Ipc A|L2 Hit|Mem Busy|Max Bandwidth|Dynamic Shared|Static Shared|Waves Per SM|Local Memory" $OUT/ncu.txt | head -250
