"""The new fp8_block_gemm at 1-16 tokens, Qwen3-8B layer: wrapped rows / masked rows, 2-4 stages; and the old tree's."""
import importlib.util, json, sys
import torch
sys.path.insert(0, ".k4/s28")
exec(open(".k4/s28/gemm_ab.py").read().split("torch.manual_seed(0)")[0])
spec = importlib.util.spec_from_file_location("fp8_gemm_v", ".k4/s28/var/fp8_gemm_v.py")
v = importlib.util.module_from_spec(spec); spec.loader.exec_module(v)
torch.manual_seed(0)
shapes = SHAPES["8b"]
weights = [((torch.randn(n, k, device="cuda") * 0.5).to(torch.float8_e4m3fn), torch.rand(n // 128, k // 128, device="cuda") * 0.01 + 0.001) for n, k in shapes]
for rep in range(2):
    for tokens in (2, 4, 8, 16):
        xs = [torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16) for _, k in shapes]
        row = {"tokens": tokens}
        for name, kw in (("wrap3", {}), ("mask3", {"row_mask": True}), ("wrap2", {"stages": 2}), ("wrap4", {"stages": 4}), ("mask4", {"row_mask": True, "stages": 4})):
            row[name] = round(sum(graph_time(lambda: v.fp8_block_gemm(x, w, ws, (128, 128), fp8_dot=True, **kw)) for x, (w, ws) in zip(xs, weights)), 2)
        print(json.dumps(row), flush=True)
