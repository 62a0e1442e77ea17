"""Single stream Qwen3-8B with block-scaled FP8 (128x128) weights quantized at load: quant_models' run,
with the loader's fp8 method swapped for Fp8BlockMethod (random: presets quantize per channel)."""
import sys
sys.argv = [sys.argv[0], "--formats", "fp8"] + sys.argv[1:]
sys.path.insert(0, "bench")
from tokenmill.quantization import config as qc
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod

original = qc.QuantizationConfig.method_for


def method_for(self, modules):
    method = original(self, modules)
    return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method


qc.QuantizationConfig.method_for = method_for
import quant_models
quant_models.main()
