"""`python -m tokenmill bench` with 128 x 128 FP8 blocks quantized at load (as .k4/s27/block_bench.py) and,
with TRITON_ROUTE=1, cuBLAS's block-scaled GEMM declined, so every batch of two tokens or more runs the
Triton kernel: the route of GPUs where PyTorch offers no block scales (sm_89, sm_120)."""
import os
import sys

from tokenmill.quantization import config as qc
from tokenmill.quantization import triton_gemms
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod

original = qc.QuantizationConfig.method_for


def method_for(self, modules):
    method = original(self, modules)
    return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method


qc.QuantizationConfig.method_for = method_for
if os.environ.get("TRITON_ROUTE") == "1":
    triton_gemms.has_cublas_blocks = lambda device: False
from tokenmill.cli import main

sys.argv = ["tokenmill", "bench", *sys.argv[1:]]
main()
