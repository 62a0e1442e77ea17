import torch, traceback
from tokenmill.kernels.triton import fp8_gemm
dev = torch.device("cuda")
print("has_cublas_blocks", fp8_gemm.has_cublas_blocks(dev), flush=True)
blocks = 4
x = torch.ones(4, blocks * 128, device=dev).to(torch.float8_e4m3fn)
w = torch.ones(blocks * 128, blocks * 128, device=dev).to(torch.float8_e4m3fn)
steps = torch.arange(1.0, blocks + 1, device=dev)
sa = steps[:, None].expand(blocks, 4).contiguous().t()
sw = steps[:, None].expand(blocks, blocks).contiguous()
try:
    y = torch._scaled_mm(x, w.t(), scale_a=sa, scale_b=sw.t(), out_dtype=torch.bfloat16)
    print(y[0, ::128], flush=True)
except Exception:
    traceback.print_exc()
