"""Repeat test_mma_gemv_equals_the_unfused_ops's checks many times per parametrization; print failures."""
import sys, torch
sys.path.insert(0, ".")
from tests import test_int4_mma as T
from tokenmill.kernels.triton import int4_mma, int4_gemv, gemv_fusion
fails = 0
for sms in (0, 132):
    int4_mma.num_sms = lambda device, sms=sms: sms
    for rows in (2, 3, 8, 11, 16):
        for prologue in ("none", "norm", "silu_mul"):
            for dtype in (torch.bfloat16, torch.float16):
                with torch.device("cuda"):
                    got, expected, packed, x, fusion = T._fused_and_unfused(rows, prologue, dtype, seed=rows)
                    bound = (2**-6 if dtype == torch.bfloat16 else 2**-9) * expected.float().abs().max().item()
                    err = (got.float() - expected.float()).abs().max().item()
                    bad = 0
                    for it in range(int(sys.argv[1])):
                        again = int4_mma.gemv(x, packed, fusion)
                        if not torch.equal(again, got):
                            bad += 1
                    counts = gemv_fusion.split_scratch(x.device)["count_ptr"].any().item()
                    tree = int4_gemv.gemv(x, packed, fusion).float()
                    terr = (got.float() - tree).abs().max().item() / tree.abs().max().item()
                    flag = err > bound or bad or counts or terr > 1e-2
                    fails += bool(flag)
                    if flag or rows == 16:
                        print(f"sms {sms} rows {rows} {prologue} {dtype}: err {err:.3g} bound {bound:.3g} unequal {bad} counts {counts} tree_rel {terr:.3g} {'FAIL' if flag else ''}", flush=True)
print("failures", fails)
