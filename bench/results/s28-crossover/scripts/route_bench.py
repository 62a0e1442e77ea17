"""`python -m tokenmill bench` (argv passes through), OLD_TABLE=1: DENSE_FROM_TOKENS as before session 28
(fp8-block-cublas 16, 4-bit/8-bit GPTQ and AWQ 128); BLOCKS=1: the fp8 method swapped for 128 x 128 FP8
blocks (as block_bench_triton.py)."""
import os
import sys

from tokenmill.quantization import config as qc
from tokenmill.quantization import triton_gemms
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod

if os.environ.get("OLD_TABLE") == "1":
    triton_gemms.DENSE_FROM_TOKENS.update({"fp8-block-cublas": 16, "gptq4": 128, "gptq4-mma": 128, "gptq8": 128})
if os.environ.get("BLOCKS") == "1":
    original = qc.QuantizationConfig.method_for

    def method_for(self, modules):
        method = original(self, modules)
        return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method

    qc.QuantizationConfig.method_for = method_for
print("DENSE_FROM_TOKENS", triton_gemms.DENSE_FROM_TOKENS, flush=True)
from tokenmill.cli import main

sys.argv = ["tokenmill", "bench", *sys.argv[1:]]
main()
