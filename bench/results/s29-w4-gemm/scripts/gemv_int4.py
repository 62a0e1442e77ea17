"""bench/quant_gemm.py --gemv for 4-bit GPTQ where int4_mma does not serve (act-order aside: pre-sm_80,
shapes it does not take): `int4_gemv` against the weight-only kernel at 1-4 and 8 tokens, Qwen3-8B."""
import sys

import torch

sys.path.insert(0, "bench")
import quant_gemm as qg  # noqa: E402

from tokenmill.kernels.triton import int4_mma  # noqa: E402
from tokenmill.quantization import triton_gemms  # noqa: E402

triton_gemms._mma_serves = lambda *args: False
int4_mma.supports = lambda *args: False
qg.GEMV_TOKENS = (1, 2, 3, 4, 8)
qg.FORMATS = {"bf16": qg.FORMATS["bf16"], "gptq4": qg.FORMATS["gptq4"], "awq": qg.FORMATS["awq"]}
rows = qg.gemv_rows("qwen3-8b", torch.device("cuda"))
qg.summarize_gemv(rows)
