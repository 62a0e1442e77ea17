"""Probe: does prefetching the next projection's weights into L2 shorten a single-token decode layer?
Chain per layer (own weight copies, > 8x L2 in rotation, one CUDA graph): qkv(norm) -> window (sleep, as
rope+attention) -> o(res) -> gate_up(norm) -> down(silu,res). Variants add L2 prefetches of the next
weight: a bulk prefetch (sm_90 cp.async.bulk.prefetch.L2) or a per-line prefetch kernel, on the main
stream or on a forked side stream."""
import json, math, sys, time
sys.path.insert(0, "bench")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import bf16_call
from tokenmill.kernels.triton import quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight

BULK = tl.constexpr("{ .reg .pred p; .reg .b32 t; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; "
        "@p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }")
LINE = tl.constexpr("{ .reg .pred p; setp.ne.u32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }")
LINE_EL = tl.constexpr("{ .reg .pred p; setp.ne.u32 p, $2, 0; @p prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0; }")


@triton.jit
def _bulk(ptr, nbytes, CHUNK: tl.constexpr):
    start = tl.program_id(0) * CHUNK
    size = tl.minimum(nbytes - start, CHUNK) + tl.zeros([1], tl.int32)
    addr = (ptr + start + tl.zeros([1], tl.int32)).to(tl.int64)
    tl.inline_asm_elementwise(BULK, "=r,l,r", [addr, size], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _lines(ptr, nbytes, BLOCK: tl.constexpr, ITERS: tl.constexpr, EVICT_LAST: tl.constexpr):
    base = tl.program_id(0) * (BLOCK * ITERS * 128)
    for i in tl.static_range(ITERS):
        off = base + (i * BLOCK + tl.arange(0, BLOCK)) * 128
        ok = (off < nbytes).to(tl.int32)
        if EVICT_LAST:
            tl.inline_asm_elementwise(LINE_EL, "=r,l,r", [(ptr + off).to(tl.int64), ok], dtype=tl.int32,
                                      is_pure=False, pack=1)
        else:
            tl.inline_asm_elementwise(LINE, "=r,l,r", [(ptr + off).to(tl.int64), ok], dtype=tl.int32,
                                      is_pure=False, pack=1)


def prefetch(t: torch.Tensor, nbytes: int, mode: str):
    nbytes = min(nbytes, t.numel() * t.element_size())
    u8 = t.view(-1).view(torch.uint8)
    if mode == "bulk":
        chunk = 1 << 16
        _bulk[(triton.cdiv(nbytes, chunk),)](u8, nbytes, CHUNK=chunk, num_warps=1)
    else:
        block, iters = 256, 4
        _lines[(triton.cdiv(nbytes, block * iters * 128),)](u8, nbytes, BLOCK=block, ITERS=iters,
                                                           EVICT_LAST=mode == "lines-el", num_warps=4)


def stored(layer):
    return layer.weight if hasattr(layer, "weight") and layer.weight.dtype != torch.int32 else layer.qweight


class Chain:
    def __init__(self, fmt, device):
        projs = projections("qwen3-8b")
        size = 0
        first = {n: build(FORMATS[fmt](), inp, sh, device) for n, (inp, sh) in projs.items()}
        size = sum(sum(p.numel() * p.element_size() for p in l.parameters()) for l in first.values())
        copies = max(2, math.ceil(600e6 / size))
        self.layers = [first] + [{n: build(FORMATS[fmt](), inp, sh, device) for n, (inp, sh) in projs.items()}
                                 for _ in range(copies - 1)]
        self.bytes = size
        self.fmt = fmt
        hid, inter = 4096, 12288
        self.x = torch.randn(1, hid, dtype=torch.bfloat16, device=device)
        self.gu = torch.randn(1, 2 * inter, dtype=torch.bfloat16, device=device)
        self.attn = torch.randn(1, 4096, dtype=torch.bfloat16, device=device)
        self.norm = torch.randn(hid, dtype=torch.bfloat16, device=device)
        self.res = torch.randn(1, hid, dtype=torch.bfloat16, device=device)
        self.calls = []
        for lay in self.layers:
            self.calls.append({n: self.call(n, lay[n]) for n in lay})
        self.side = torch.cuda.Stream()

    def call(self, name, layer):
        kind = {"qkv": "norm", "o": "residual", "gate_up": "norm", "down": "silu"}[name]
        x = {"qkv": self.x, "o": self.attn, "gate_up": self.x, "down": self.gu}[name]
        if self.fmt == "bf16":
            return bf16_call(kind, x, self.norm, self.res, layer.weight)
        fusion = Fusion(norm=(self.norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                        residual=self.res if kind != "norm" else None)
        p = packed_weight(layer)
        return lambda: quant_gemv.gemv(x, p, fusion)

    def run(self, variant, window):
        mode, o_where, nxt = variant  # mode bulk/lines; o_where none/main/side; nxt bytes of next weights
        main = torch.cuda.current_stream()
        L = len(self.layers)
        for i, (lay, c) in enumerate(zip(self.layers, self.calls)):
            nl = self.layers[(i + 1) % L]
            c["qkv"]()
            if o_where == "main":
                prefetch(stored(lay["o"]), 1 << 40, mode)
            elif o_where == "side":
                self.side.wait_stream(main)
                with torch.cuda.stream(self.side):
                    prefetch(stored(lay["o"]), 1 << 40, mode)
            if window:
                torch.cuda._sleep(window)
            if o_where == "side":
                main.wait_stream(self.side)
            c["o"]()
            if nxt:
                prefetch(stored(lay["gate_up"]), nxt, mode)
            c["gate_up"]()
            if nxt:
                prefetch(stored(lay["down"]), nxt, mode)
            c["down"]()
            if nxt:
                prefetch(stored(nl["qkv"]), nxt, mode)

    def time(self, variant, window, replays=10):
        self.run(variant, window)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self.run(variant, window)
        g.replay(); torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        res = []
        for _ in range(3):
            s.record()
            for _ in range(replays):
                g.replay()
            e.record(); e.synchronize()
            res.append(s.elapsed_time(e) * 1000 / (replays * len(self.layers)))
        return sorted(res)[1]


def micro(device):
    """Bulk/line prefetch kernel alone (does its end wait for the bytes?), and a GEMV-sized read after it."""
    t = torch.empty(64 << 20, dtype=torch.uint8, device=device)
    big = [torch.empty(32 << 20, dtype=torch.uint8, device=device) for _ in range(24)]
    out = {}
    for mode in ("bulk", "lines"):
        for nb in (8 << 20, 32 << 20):
            calls = [lambda b=b: prefetch(b, nb, mode) for b in big]
            for c in calls: c()
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for c in calls: c()
            g.replay(); torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(10): g.replay()
            e.record(); e.synchronize()
            us = s.elapsed_time(e) * 1000 / (10 * len(big))
            out[f"{mode}-{nb >> 20}MB"] = round(us, 2)
            print(json.dumps({"micro": mode, "MB": nb >> 20, "us_per_launch": round(us, 2),
                              "TBps_if_waited": round(nb / us / 1e6, 2)}), flush=True)
    return out


def main():
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    micro(device)
    fmts = sys.argv[1].split(",") if len(sys.argv) > 1 else ["bf16", "fp8-channel", "awq"]
    cc = torch.cuda.get_device_capability()
    modes = ["bulk", "lines"] if cc >= (9, 0) else ["lines"]
    for fmt in fmts:
        ch = Chain(fmt, device)
        rows = {}
        for window in (0, 14000):
            rows[("none", "none", 0, window)] = ch.time(("bulk", "none", 0), window)
            for mode in modes:
                for where in ("main", "side"):
                    if window == 0 and where == "side":
                        continue
                    rows[(mode, where, 0, window)] = ch.time((mode, where, 0), window)
                for nxt in (4 << 20, 12 << 20):
                    rows[(mode, "none", nxt, window)] = ch.time((mode, "none", nxt), window)
                    rows[(mode, "main", nxt, window)] = ch.time((mode, "main", nxt), window)
            rows[("none", "none", 0, window, "again")] = ch.time(("bulk", "none", 0), window)
        for k, v in rows.items():
            print(json.dumps({"format": fmt, "mode": k[0], "o_prefetch": k[1], "next_MB": k[2] >> 20,
                              "window_cycles": k[3], "us_per_layer": round(v, 2),
                              "layer_MB": round(ch.bytes / 1e6, 1)}), flush=True)
        del ch
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
