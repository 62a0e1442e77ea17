"""Call A probe: is the fp8 GEMV bound by its byte conversions? Variants of the PTX word FMA, timed under
CUDA graphs at Qwen3-8B's four projection shapes, one token; bf16 skinny GEMV beside them."""
import importlib.util, pathlib, sys, torch, triton
from triton.testing import do_bench_cudagraph
from tokenmill.kernels.triton import fp8_gemv, skinny_gemm
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION

SRC = pathlib.Path(fp8_gemv.__file__).read_text()
OLD_PTX = SRC[SRC.index('_E4M3_WORD_FMA = tl.constexpr("""'):SRC.index('""")', SRC.index('_E4M3_WORD_FMA')) + 5]

NOCONV = '''_E4M3_WORD_FMA = tl.constexpr("""
{
fma.rn.f32 $0, $1, $2, $6;
}
""")'''
INTDEC = '''_E4M3_WORD_FMA = tl.constexpr("""
{
.reg .b32 b0, b1, b2, b3;
.reg .f32 sum;
shl.b32 b0, $1, 24;
shl.b32 b1, $1, 16;
shl.b32 b2, $1, 8;
shr.s32 b0, b0, 4;
shr.s32 b1, b1, 4;
shr.s32 b2, b2, 4;
shr.s32 b3, $1, 4;
and.b32 b0, b0, 0x87F00000;
and.b32 b1, b1, 0x87F00000;
and.b32 b2, b2, 0x87F00000;
and.b32 b3, b3, 0x87F00000;
fma.rn.f32 sum, b0, $2, $6;
fma.rn.f32 sum, b1, $3, sum;
fma.rn.f32 sum, b2, $4, sum;
fma.rn.f32 $0, b3, $5, sum;
}
""")'''
PRMT = INTDEC.replace("shl.b32 b0, $1, 24;", "prmt.b32 b0, $1, 0, 0x0444;").replace(
    "shl.b32 b1, $1, 16;", "prmt.b32 b1, $1, 0, 0x1444;").replace("shl.b32 b2, $1, 8;", "prmt.b32 b2, $1, 0, 0x2444;")


def variant(name, ptx, int_scaled):
    src = SRC.replace(OLD_PTX, ptx)
    if int_scaled:  # weights come out as value * 2^-120: activations * 2^64 in, sums * 2^56 out
        src = src.replace("x0, x1, x2, x3 = x0[None, :], x1[None, :], x2[None, :], x3[None, :]",
                          "x0, x1, x2, x3 = x0[None, :] * 18446744073709551616.0, x1[None, :] * 18446744073709551616.0, x2[None, :] * 18446744073709551616.0, x3[None, :] * 18446744073709551616.0")
        src = src.replace("y = tl.sum(acc, 1) * tl.load(scale_ptr + n, mask=n_mask, other=0.0)",
                          "y = tl.sum(acc, 1) * 72057594037927936.0 * tl.load(scale_ptr + n, mask=n_mask, other=0.0)")
        assert src.count("18446744073709551616.0") == 4 and "72057594037927936.0" in src
    path = pathlib.Path(f"/tmp/gemv_{name}.py"); path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"gemv_{name}", path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":  # the probe of call A; gemv_probe2.py reuses the variants above
    variants = {"current": fp8_gemv, "noconv": variant("noconv", NOCONV, False), "intdec": variant("intdec", INTDEC, True),
                "prmt": variant("prmt", PRMT, True)}
    dev = torch.device("cuda")
    shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288)}
    torch.manual_seed(0)
    print(f"{'shape':8} {'MB':>6} " + " ".join(f"{v:>16}" for v in [*variants, "bf16"]))
    totals = {v: 0.0 for v in [*variants, "bf16"]}
    for name, (n, k) in shapes.items():
        w = (torch.randn(n, k, device=dev) * 0.05)
        scales = w.abs().amax(1) / 448
        w8 = (w / scales[:, None]).to(torch.float8_e4m3fn)
        wb = w.to(torch.bfloat16)
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        ref = fp8_gemv.gemv(x, w8, scales, NO_FUSION)
        row = []
        for vname, mod in variants.items():
            out = mod.gemv(x, w8, scales, NO_FUSION)
            if vname in ("intdec", "prmt"):
                assert torch.equal(out, ref), (vname, (out.float() - ref.float()).abs().max())
            us = do_bench_cudagraph(lambda: mod.gemv(x, w8, scales, NO_FUSION), rep=200) * 1000
            totals[vname] += us
            row.append(f"{us:7.2f} {n * k / us / 1e3:6.0f}GB/s")
        us = do_bench_cudagraph(lambda: skinny_gemm.linear(x, wb), rep=200) * 1000
        totals["bf16"] += us
        row.append(f"{us:7.2f} {2 * n * k / us / 1e3:6.0f}GB/s")
        print(f"{name:8} {n * k / 1e6:6.1f} " + " ".join(row))
    print("layer us: " + "  ".join(f"{v} {t:.1f}" for v, t in totals.items()))
    # subnormal / sign exactness of the int decode on every e4m3 byte
    allb = torch.arange(256, dtype=torch.uint8, device=dev).view(torch.float8_e4m3fn)
    finite = ~torch.isnan(allb.float())
    wv = allb[finite].repeat(16, 8)[:, :1024].contiguous()  # 16 rows
    xs = torch.randn(1, wv.shape[1], device=dev, dtype=torch.bfloat16)
    one = torch.ones(wv.shape[0], device=dev)
    a = variants["intdec"].gemv(xs, wv, one, NO_FUSION).float(); b = fp8_gemv.gemv(xs, wv, one, NO_FUSION).float()
    print("all-bytes intdec vs current max diff", (a - b).abs().max().item())
