"""Probe (s24 C): one layer's o -> gate|up -> down chain at one token, as the decode graph runs it, each
chain replaying over rotated weight sets (> 8x L2) in one CUDA graph, µs per layer:
  cur: fp8_gemv o (+residual) -> fp8_gemv gate|up (RMSNorm prologue) -> fp8_gemv down (SiLU-and-mul, +residual)
  A:   fp8_gemv o (+residual) -> rms_norm to Fp8Rows -> a8 tl.dot gate|up -> fp8_gemv down (as cur)
  A2:  fp8_gemv o (plain) -> add_rms_norm(+residual) to Fp8Rows -> a8 gate|up -> fp8_gemv down (as cur)
and the pieces alone. The a8 kernel takes Fp8Rows of up to 16 rows."""
import json, math, sys
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from f8mma_probe import timed
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION, Fusion
from tokenmill.kernels.triton.norm import rms_norm


@triton.jit
def _a8_rows_kernel(w_ptr, x_ptr, xs_ptr, ws_ptr, out_ptr, M, N, K, stride_w, stride_x, stride_o,
                    BO: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr):
    rows = tl.program_id(0) * BO + tl.arange(0, BO)
    t = tl.arange(0, BT)
    live = t < M
    acc = tl.zeros([BO, BT], tl.float32)
    for k0 in tl.range(0, K, BK, num_stages=STAGES):
        k = k0 + tl.arange(0, BK)
        w = tl.load(w_ptr + rows[:, None] * stride_w + k[None, :])
        x = tl.load(x_ptr + t[None, :] * stride_x + k[:, None], mask=live[None, :], other=0.0)
        acc = tl.dot(w, x, acc)
    y = acc * tl.load(ws_ptr + rows)[:, None] * tl.load(xs_ptr + t, mask=live, other=0.0)[None, :]
    tl.store(out_ptr + t[None, :] * stride_o + rows[:, None], y.to(out_ptr.dtype.element_ty), mask=live[None, :])


def a8_rows(rows, w, ws, bo=64, bk=256, stages=3):
    m, k = rows.values.shape
    n = w.shape[0]
    out = torch.empty(m, n, dtype=rows.out_dtype, device=w.device)
    _a8_rows_kernel[(n // bo,)](w, rows.values, rows.scales, ws, out, m, n, k, w.stride(0), rows.values.stride(0),
                                out.stride(0), BO=bo, BK=bk, BT=16, STAGES=stages, num_warps=4)
    return out


@triton.jit
def _a8_silu_kernel(w_ptr, x_ptr, xs_ptr, ws_ptr, out_ptr, M, I, K, stride_w, stride_x, stride_o,
                    BO: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr):
    rows = tl.program_id(0) * BO + tl.arange(0, BO)
    t = tl.arange(0, BT)
    live = t < M
    acc_g = tl.zeros([BO, BT], tl.float32)
    acc_u = tl.zeros([BO, BT], tl.float32)
    for k0 in tl.range(0, K, BK, num_stages=STAGES):
        k = k0 + tl.arange(0, BK)
        wg = tl.load(w_ptr + rows[:, None] * stride_w + k[None, :])
        wu = tl.load(w_ptr + (rows + I)[:, None] * stride_w + k[None, :])
        x = tl.load(x_ptr + t[None, :] * stride_x + k[:, None], mask=live[None, :], other=0.0)
        acc_g = tl.dot(wg, x, acc_g)
        acc_u = tl.dot(wu, x, acc_u)
    xs = tl.load(xs_ptr + t, mask=live, other=0.0)[None, :]
    g = (acc_g * tl.load(ws_ptr + rows)[:, None] * xs).to(tl.bfloat16).to(tl.float32)
    u = (acc_u * tl.load(ws_ptr + rows + I)[:, None] * xs).to(tl.bfloat16).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(out_ptr + t[None, :] * stride_o + rows[:, None], y.to(out_ptr.dtype.element_ty), mask=live[None, :])


def a8_silu(rows, w, ws, bo=64, bk=256, stages=3):
    m, k = rows.values.shape
    i = w.shape[0] // 2
    out = torch.empty(m, i, dtype=rows.out_dtype, device=w.device)
    _a8_silu_kernel[(i // bo,)](w, rows.values, rows.scales, ws, out, m, i, k, w.stride(0), rows.values.stride(0),
                                out.stride(0), BO=bo, BK=bk, BT=16, STAGES=stages, num_warps=4)
    return out


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    proj = projections("qwen3-8b")
    hidden, inter = proj["o"][1][0], proj["down"][0]
    sets = []
    for _ in range(4):
        o = build(FORMATS["fp8-channel"](), *proj["o"], dev)
        gu = build(FORMATS["fp8-channel"](), *proj["gate_up"], dev)
        dn = build(FORMATS["fp8-channel"](), *proj["down"], dev)
        sets.append(tuple((la.weight, la.weight_scale.float().reshape(-1).contiguous()) for la in (o, gu, dn)))
    attn = torch.randn(1, hidden, dtype=torch.bfloat16, device=dev)
    res0 = torch.randn(1, hidden, dtype=torch.bfloat16, device=dev)
    nw = (1 + 0.1 * torch.randn(hidden, device=dev)).to(torch.bfloat16)
    eps = 1e-6
    res_scratch = res0.clone()

    def cur(s):
        (ow, os_), (gw, gs), (dw, ds) = s
        h = fp8_gemv.gemv(attn, ow, os_, Fusion(residual=res0))
        g = fp8_gemv.gemv(h, gw, gs, Fusion(norm=(nw, eps)))
        return fp8_gemv.gemv(g, dw, ds, Fusion(silu_mul=True, residual=h))

    def chain_a(s, bo=64, bk=256, stages=3):
        (ow, os_), (gw, gs), (dw, ds) = s
        h = fp8_gemv.gemv(attn, ow, os_, Fusion(residual=res0))
        x8, _ = rms_norm(h, nw, eps, quantize=True)
        g = a8_rows(x8, gw, gs, bo, bk, stages)
        return fp8_gemv.gemv(g, dw, ds, Fusion(silu_mul=True, residual=h))

    def chain_a3(s, bo=64, bk=256, stages=3):
        (ow, os_), (gw, gs), (dw, ds) = s
        h = fp8_gemv.gemv(attn, ow, os_, Fusion(residual=res0))
        x8, _ = rms_norm(h, nw, eps, quantize=True)
        a = a8_silu(x8, gw, gs, bo, bk, stages)
        return fp8_gemv.gemv(a, dw, ds, Fusion(residual=h))

    def chain_a2(s):
        (ow, os_), (gw, gs), (dw, ds) = s
        o_out = fp8_gemv.gemv(attn, ow, os_, NO_FUSION)
        res = res_scratch
        x8, _ = rms_norm(o_out, nw, eps, residual=res, quantize=True)
        g = a8_rows(x8, gw, gs)
        return fp8_gemv.gemv(g, dw, ds, Fusion(silu_mul=True, residual=res))

    # correctness of the a8 gate|up against the unfused a16 product
    (ow, os_), (gw, gs), _ = sets[0]
    h = fp8_gemv.gemv(attn, ow, os_, Fusion(residual=res0))
    ref = fp8_gemv.gemv(h, gw, gs, Fusion(norm=(nw, eps))).float()
    x8, _ = rms_norm(h, nw, eps, quantize=True)
    got = a8_rows(x8, gw, gs).float()
    print(json.dumps({"a8 vs a16 gate_up max rel err": ((got - ref).abs().max() / ref.abs().max()).item(),
                      "mean rel": ((got - ref).abs().mean() / ref.abs().mean()).item()}), flush=True)
    a = a8_silu(x8, gw, gs).float()
    full = a8_rows(x8, gw, gs).float()
    i = full.shape[1] // 2
    ref_a = (full[:, :i] * torch.sigmoid(full[:, :i]) * full[:, i:]).to(torch.bfloat16).float()
    print(json.dumps({"a8 silu vs a8 then silu max rel": ((a - ref_a).abs().max() / ref_a.abs().max()).item()}), flush=True)
    for m in (2, 8, 16):
        xm = torch.randn(m, hidden, dtype=torch.bfloat16, device=dev)
        r8, _ = rms_norm(xm, nw, eps, quantize=True)
        refm = (r8.values.float() * r8.scales) @ (gw.float() * gs[:, None]).T
        gotm = a8_rows(r8, gw, gs).float()
        print(json.dumps({"rows": m, "a8 vs its fp32 reference max rel": ((gotm - refm).abs().max() / refm.abs().max()).item()}), flush=True)

    res = {}
    for rep in range(2):
        res[f"cur {rep}"] = timed([lambda s=s: cur(s) for s in sets])
        res[f"A {rep}"] = timed([lambda s=s: chain_a(s) for s in sets])
        res[f"A2 {rep}"] = timed([lambda s=s: chain_a2(s) for s in sets])
        res[f"A3 silu {rep}"] = timed([lambda s=s: chain_a3(s) for s in sets])
        res[f"A3 silu bo64 bk128 st4 {rep}"] = timed([lambda s=s: chain_a3(s, 64, 128, 4) for s in sets])
        res[f"A3 silu bo32 bk256 st3 {rep}"] = timed([lambda s=s: chain_a3(s, 32, 256, 3) for s in sets])
        for bo, bk, st in ((64, 128, 4), (128, 256, 3), (64, 256, 4)):
            res[f"A bo{bo} bk{bk} st{st} {rep}"] = timed([lambda s=s: chain_a(s, bo, bk, st) for s in sets])
    # pieces
    h = fp8_gemv.gemv(attn, sets[0][0][0], sets[0][0][1], Fusion(residual=res0))
    res["norm->fp8 alone"] = timed([lambda: rms_norm(h, nw, eps, quantize=True)] * 4)
    res["gate_up cur alone"] = timed([lambda s=s: fp8_gemv.gemv(h, s[1][0], s[1][1], Fusion(norm=(nw, eps))) for s in sets])
    res["gate_up a8 alone"] = timed([lambda s=s: a8_rows(x8, s[1][0], s[1][1]) for s in sets])
    res["gate_up a8 silu alone"] = timed([lambda s=s: a8_silu(x8, s[1][0], s[1][1]) for s in sets])
    a1 = a8_silu(x8, sets[0][1][0], sets[0][1][1])
    g1 = fp8_gemv.gemv(h, sets[0][1][0], sets[0][1][1], Fusion(norm=(nw, eps)))
    res["down fused silu alone"] = timed([lambda s=s: fp8_gemv.gemv(g1, s[2][0], s[2][1], Fusion(silu_mul=True, residual=h)) for s in sets])
    res["down plain+res alone"] = timed([lambda s=s: fp8_gemv.gemv(a1, s[2][0], s[2][1], Fusion(residual=h)) for s in sets])
    for m in (2, 4, 8, 16):
        xm = torch.randn(m, hidden, dtype=torch.bfloat16, device=dev)
        r8, _ = rms_norm(xm, nw, eps, quantize=True)
        res[f"gate_up a8 {m} rows"] = timed([lambda s=s: a8_rows(r8, s[1][0], s[1][1]) for s in sets])
        res[f"gate_up cur {m} rows"] = timed([lambda s=s: fp8_gemv.gemv(xm, s[1][0], s[1][1], Fusion(norm=(nw, eps))) for s in sets])
    for k, v in res.items():
        print(json.dumps({"variant": k, "us": round(v, 2)}), flush=True)


if __name__ == "__main__":
    main()
