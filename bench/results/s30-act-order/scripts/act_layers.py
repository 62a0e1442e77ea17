"""Act-order GPTQ, Qwen3-8B layer (4 projections), 4- and 8-bit, us per layer (CUDA graphs): the layer as
the tree before this change ran it (no reordering: key gptq-act-order, dense route at every count), as
it runs now (rows in group order at load, x's columns gathered: row-ordered routes), and a row-ordered
checkpoint of the same weights (no gather) for the gather's cost. Plain calls at 1-256 tokens, and the
decode step's fused GEMVs at 1 (and 2 for 4-bit) tokens: qkv with the norm prologue, o with the residual,
gate|up with the norm, down with SiLU-and-mul and the residual. Also the largest error of each against
the checkpoint's dequantized weight. One JSON line per (bits, variant)."""
import json
import sys

import torch

sys.path.insert(0, "bench")
from quant_gemm import projections, time_call  # noqa: E402

from tokenmill.quantization import QuantLinear  # noqa: E402
from tokenmill.quantization.gptq import GptqMethod, dequantize_gptq, quantize_gptq  # noqa: E402
from tokenmill.quantization.triton_gemms import use_triton_gemms  # noqa: E402

device = torch.device("cuda")
torch.manual_seed(0)


def layer_of(bits, inp, shards, weights, order, reorder):
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        layer = QuantLinear(inp, shards, False, GptqMethod(bits, 128, checkpoint_is_gptq=True, act_order=order is not None))
    torch.set_default_dtype(torch.float32)
    dense = []
    for index, rows in enumerate(weights):
        tensors = quantize_gptq(rows, bits, 128, order)
        for name, t in tensors.items():
            layer.load(name, t, index)
        dense.append(dequantize_gptq(tensors, bits).T)
    if reorder:
        layer.after_loading()
    use_triton_gemms(layer)
    return layer, torch.cat(dense)


for bits in (4, 8):
    variants = {"old-dense": [], "new-reordered": [], "row-ordered": []}
    for name, (inp, shards) in projections("qwen3-8b").items():
        weights = [torch.randn(r, inp, device=device, dtype=torch.bfloat16) * 0.02 for r in shards]
        order = torch.randperm(inp, device=device)
        variants["old-dense"].append((name,) + layer_of(bits, inp, shards, weights, order, False))
        variants["new-reordered"].append((name,) + layer_of(bits, inp, shards, weights, order, True))
        variants["row-ordered"].append((name,) + layer_of(bits, inp, shards, weights, None, True))
    for variant, layers in variants.items():
        row = {"bits": bits, "variant": variant, "key": layers[0][1].method.gemm.table_key}
        errors = []
        for tokens in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            total = 0.0
            for name, layer, dense in layers:
                x = torch.randn(tokens, layer.in_features, device=device, dtype=torch.bfloat16)
                total += time_call(lambda l=layer, x=x: l(x), repeat=20)
                if tokens in (1, 16, 256):
                    got, want = layer(x).float(), x.float() @ dense.T
                    errors.append((got - want).abs().max().item() / want.abs().max().item())
            row[tokens] = round(total, 1)
        row["max_rel_error"] = round(max(errors), 5)
        gemm = layers[0][1].method.gemm
        for tokens in (1, 2) if gemm.gemv_up_to() >= 2 else (1,) if gemm.gemv_up_to() >= 1 else ():
            total = 0.0
            for name, layer, dense in layers:
                g = layer.method.gemm
                hidden = 4096
                if name in ("qkv", "gate_up"):
                    x = torch.randn(tokens, layer.in_features, device=device, dtype=torch.bfloat16)
                    w = torch.rand(layer.in_features, device=device, dtype=torch.bfloat16) + 0.5
                    call = lambda g=g, l=layer, x=x, w=w: g.fused_gemv(l, x, norm=(w, 1e-6))
                elif name == "o":
                    x = torch.randn(tokens, layer.in_features, device=device, dtype=torch.bfloat16)
                    r = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)
                    call = lambda g=g, l=layer, x=x, r=r: g.fused_gemv(l, x, residual=r)
                else:
                    x = torch.randn(tokens, 2 * layer.in_features, device=device, dtype=torch.bfloat16)
                    r = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)
                    call = lambda g=g, l=layer, x=x, r=r: g.fused_gemv(l, x, silu_mul=True, residual=r)
                total += time_call(call, repeat=20)
            row[f"fused_{tokens}"] = round(total, 1)
        print(json.dumps(row), flush=True)
    del variants
    torch.cuda.empty_cache()
