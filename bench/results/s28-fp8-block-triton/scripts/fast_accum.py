"""cuBLAS's block-scaled fp8 GEMM with and without use_fast_accum (Qwen3-4B / 8B shapes): us a layer (4
GEMMs, activations pre-quantized), and each variant's largest error against the fp32 product of the same
fp8 operands (relative to the output's largest magnitude). One JSON line per (model, tokens)."""
import json

import torch

from tokenmill.kernels.triton.fp8_quant import quantize_token_groups

exec("\n".join(l for l in open(".k4/s28/gemm_ab.py").read().split("torch.manual_seed(0)")[0].splitlines() if not l.startswith("from tokenmill")))
torch.manual_seed(0)
for model, shapes in SHAPES.items():
    weights = []
    for n, k in shapes:
        w = (torch.randn(n, k, device="cuda") * 0.5).to(torch.float8_e4m3fn)
        ws = torch.rand(n // 128, k // 128, device="cuda") * 0.01 + 0.001
        weights.append((w, ws))
    for tokens in (16, 128, 358, 2048):
        row = {"model": model, "tokens": tokens}
        for fast in (False, True):
            total, worst = 0.0, 0.0
            for (n, k), (w, ws) in zip(shapes, weights):
                x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
                q, s = quantize_token_groups(x, 128, tokens_major=True, rows=tokens + -tokens % 4)
                mm = lambda: torch._scaled_mm(q, w.t(), scale_a=s, scale_b=ws.t(), out_dtype=torch.bfloat16, use_fast_accum=fast)
                try:
                    y = mm().float()
                except Exception as e:  # noqa: BLE001
                    row[f"fast{int(fast)}"] = str(e)[:100]
                    break
                deq_x = (q.float().view(q.shape[0], -1, 128) * s.unsqueeze(-1)).view(q.shape[0], -1)
                deq_w = w.float() * ws.repeat_interleave(128, 0).repeat_interleave(128, 1)
                ref = deq_x @ deq_w.t()
                worst = max(worst, ((y - ref).abs().max() / ref.abs().max()).item())
                total += graph_time(mm)
            else:
                row[f"fast{int(fast)}_us"] = round(total, 2)
                row[f"fast{int(fast)}_err"] = round(worst, 5)
        print(json.dumps(row), flush=True)
