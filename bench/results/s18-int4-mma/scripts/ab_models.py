"""bench/quant_models.py with `--tree`: the 4-bit GEMV as before int4_mma (int4_gemv, GEMV up to 4 rows)."""
import sys
sys.path.insert(0, "bench")
if "--tree" in sys.argv:
    sys.argv.remove("--tree")
    from tokenmill.kernels.triton import int4_mma
    from tokenmill.quantization import triton_gemms
    int4_mma.supports = lambda x, weight: False
    triton_gemms.GEMV_UP_TO_TOKENS["gptq4-mma"] = 4
    print("tree: int4_gemv only", flush=True)
import quant_models
quant_models.main()
