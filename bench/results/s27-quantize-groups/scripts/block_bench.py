"""`python -m tokenmill bench` with the loader's fp8 method swapped for 128 x 128 FP8 blocks (quantized at
load, as block_model.py does for quant_models): argv passes through to the bench command."""
import sys
from tokenmill.quantization import config as qc
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod

original = qc.QuantizationConfig.method_for


def method_for(self, modules):
    method = original(self, modules)
    return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method


qc.QuantizationConfig.method_for = method_for
from tokenmill.cli import main

sys.argv = ["tokenmill", "bench", *sys.argv[1:]]
main()
