#!/bin/bash
# Session 29 call J (H100): 4-bit GPTQ/AWQ where int4_mma does not serve: int4_gemv against the new weight-only kernel at 1-8 tokens (call I ran bench/quant_gemm.py --gemv --presets qwen3-8b --out $OUT/gemv.json here instead).
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/log.txt
timeout -s KILL 200 python3 .k4/s29/gemv_int4.py 2>&1 | grep -v Warn | grep -v '^{' | tee -a $OUT/log.txt
