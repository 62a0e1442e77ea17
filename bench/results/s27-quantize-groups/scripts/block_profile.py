"""bench/profile_step.py with the loader's fp8 method swapped for 128 x 128 FP8 blocks when argv[1] is
"block" (per channel otherwise); the rest of argv passes through."""
import sys
sys.path.insert(0, "bench")
mode, rest = sys.argv[1], sys.argv[2:]
from tokenmill.quantization import config as qc
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod

if mode == "block":
    original = qc.QuantizationConfig.method_for

    def method_for(self, modules):
        method = original(self, modules)
        return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method

    qc.QuantizationConfig.method_for = method_for
import profile_step

sys.argv = ["profile_step.py", *rest]
profile_step.main()
