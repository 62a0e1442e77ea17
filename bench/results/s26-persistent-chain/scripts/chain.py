"""Probe (s26): one persistent launch for a layer's four 4-bit GEMVs at one token (q|k|v with the RMSNorm
prologue -> o + residual -> gate|up with RMSNorm -> down with SiLU-and-mul + residual; o reads the first
4,096 q|k|v outputs in place of attention), programs co-resident, a grid barrier between phases; against
the tree's four `int4_gemv` launches on the same buffers. Weights of 8 layers rotated in one CUDA graph
(> 8x L2). Outputs checked bitwise against the tree's launches."""
import math
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch
import triton
import triton.language as tl
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import int4_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion, row_rstd, split_scratch, store_split_row
from tokenmill.kernels.triton.int4_gemv import _k_step, _k_step_loads
from tokenmill.quantization.triton_gemms import packed_weight


@triton.jit
def _fence():
    tl.inline_asm_elementwise("fence.acq_rel.gpu; mov.u32 $0, 0;", "=r", [], dtype=tl.int32, is_pure=False,
                              pack=1)


@triton.jit
def _grid_barrier(bar_ptr, target):
    tl.debug_barrier()
    _fence()
    tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
    seen = tl.load(bar_ptr, volatile=True)
    while seen < target:
        seen = tl.load(bar_ptr, volatile=True)
    _fence()
    tl.debug_barrier()


@triton.jit
def _prefetch(pid, P, w_ptr, N, K, stride_wk, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, STEPS: tl.constexpr):
    """L2 prefetch of the first STEPS word-row groups (16 rows each) of this program's first item."""
    if STEPS > 0:
        items = tl.cdiv(N, BLOCK_N) * SPLIT
        item = tl.minimum(pid, items - 1)
        split, tile = item % SPLIT, item // SPLIT
        n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        row0 = split * (K // SPLIT) // 8
        rows = row0 + tl.arange(0, 16 * STEPS)
        ptrs = w_ptr + rows[:, None] * stride_wk + n[None, :]
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def _phase(pid, P, x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, norm_ptr, res_ptr, partial_ptr, count_ptr, N, K,
           stride_wk, stride_sg, stride_zg, eps, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
           GROUPS: tl.constexpr, PROLOGUE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr):
    STEP: tl.constexpr = GROUPS * 128
    k_per_split = K // SPLIT
    items = tl.cdiv(N, BLOCK_N) * SPLIT
    for item in range(pid, items, P):
        split = item % SPLIT
        tile = item // SPLIT
        n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = n < N
        k_start = split * k_per_split
        k_end = k_start + k_per_split
        loaded = _k_step_loads(w_ptr, z_ptr, s_ptr, x_ptr, norm_ptr, k_start, K, n, n_mask, stride_wk, stride_zg,
                               stride_sg, 0, 128, PROLOGUE, GROUPS, 128)
        rstd = row_rstd(x_ptr, K, eps, PROLOGUE, NORM_BLOCK)
        acc = tl.zeros([GROUPS, 16, BLOCK_N], tl.float32)
        for k0 in range(k_start, k_end, STEP):
            current = loaded
            loaded = _k_step_loads(w_ptr, z_ptr, s_ptr, x_ptr, norm_ptr, tl.minimum(k0 + STEP, k_end - STEP), K, n,
                                   n_mask, stride_wk, stride_zg, stride_sg, 0, 128, PROLOGUE, GROUPS, 128)
            acc = _k_step(acc, current, rstd, GROUPS, 128, PROLOGUE, True)
        store_split_row(tl.sum(tl.sum(acc, 1), 0), out_ptr, partial_ptr, count_ptr, tile, split, res_ptr, res_ptr,
                        0, n, n_mask, 0, 0, SPLIT, BLOCK_N, False, HAS_RESIDUAL)


@triton.jit
def _chain_kernel(h_ptr, qkv_ptr, h2_ptr, gu_ptr, h3_ptr, n1_ptr, n3_ptr, partial_ptr, count_ptr, bar_ptr,
                  w1, s1, z1, w2, s2, z2, w3, s3, z3, w4, s4, z4, sw1, ss1, sz1, sw2, ss2, sz2, sw3, ss3, sz3,
                  sw4, ss4, sz4, P, eps, HID: tl.constexpr, QKV: tl.constexpr, INTER: tl.constexpr,
                  SP1: tl.constexpr, BN1: tl.constexpr, G1: tl.constexpr, SP2: tl.constexpr, BN2: tl.constexpr,
                  G2: tl.constexpr, SP3: tl.constexpr, BN3: tl.constexpr, G3: tl.constexpr, SP4: tl.constexpr,
                  BN4: tl.constexpr, G4: tl.constexpr, PREFETCH: tl.constexpr):
    pid = tl.program_id(0)
    _phase(pid, P, h_ptr, w1, s1, z1, qkv_ptr, n1_ptr, h_ptr, partial_ptr, count_ptr, QKV, HID, sw1, ss1, sz1, eps,
           SP1, BN1, G1, 1, False, 1024)
    _prefetch(pid, P, w2, HID, HID, sw2, SP2, BN2, PREFETCH)
    _grid_barrier(bar_ptr, P)
    _phase(pid, P, qkv_ptr, w2, s2, z2, h2_ptr, n1_ptr, h_ptr, partial_ptr, count_ptr, HID, HID, sw2, ss2, sz2, eps,
           SP2, BN2, G2, 0, True, 1024)
    _prefetch(pid, P, w3, 2 * INTER, HID, sw3, SP3, BN3, PREFETCH)
    _grid_barrier(bar_ptr, 2 * P)
    _phase(pid, P, h2_ptr, w3, s3, z3, gu_ptr, n3_ptr, h2_ptr, partial_ptr, count_ptr, 2 * INTER, HID, sw3, ss3,
           sz3, eps, SP3, BN3, G3, 1, False, 1024)
    _prefetch(pid, P, w4, HID, INTER, sw4, SP4, BN4, PREFETCH)
    _grid_barrier(bar_ptr, 3 * P)
    _phase(pid, P, gu_ptr, w4, s4, z4, h3_ptr, n3_ptr, h2_ptr, partial_ptr, count_ptr, HID, INTER, sw4, ss4, sz4,
           eps, SP4, BN4, G4, 2, True, 1024)
    if tl.atomic_add(bar_ptr + 1, 1, sem="acq_rel", scope="gpu") == P - 1:
        tl.atomic_xchg(bar_ptr, 0)
        tl.atomic_xchg(bar_ptr + 1, 0)


def chain(bufs, layer, cfg, P, bar, prefetch, warmup=False):
    (q, o, gu, d) = layer
    args = []
    for p in (q, o, gu, d):
        args += [p.weight, p.scales, p.zeros]
    strides = []
    for p in (q, o, gu, d):
        strides += [p.weight.stride(0), p.scales.stride(0), p.zeros.stride(0)]
    consts = {}
    for i, (sp, bn, g) in enumerate(cfg, 1):
        consts.update({f"SP{i}": sp, f"BN{i}": bn, f"G{i}": g})
    launch = _chain_kernel.warmup if warmup else _chain_kernel[(P,)]
    extra = {"grid": (P,)} if warmup else {}
    return launch(bufs["h"], bufs["qkv"], bufs["h2"], bufs["gu"], bufs["h3"], bufs["n1"], bufs["n3"],
                        *split_scratch(bufs["h"].device).values(), bar, *args, *strides, P, 1e-6,
                        HID=4096, QKV=6144, INTER=12288, **consts, PREFETCH=prefetch, num_warps=4, **extra)


def tree(bufs, layer):
    q, o, gu, d = layer
    bufs["qkv"].copy_(int4_gemv.gemv(bufs["h"], q, Fusion(norm=(bufs["n1"], 1e-6))))
    bufs["h2"].copy_(int4_gemv.gemv(bufs["qkv"][:, :4096], o, Fusion(residual=bufs["h"])))
    bufs["gu"].copy_(int4_gemv.gemv(bufs["h2"], gu, Fusion(norm=(bufs["n3"], 1e-6))))
    bufs["h3"].copy_(int4_gemv.gemv(bufs["gu"], d, Fusion(silu_mul=True, residual=bufs["h2"])))


def tree_nocopy(bufs, layer):
    q, o, gu, d = layer
    qkv = int4_gemv.gemv(bufs["h"], q, Fusion(norm=(bufs["n1"], 1e-6)))
    h2 = int4_gemv.gemv(qkv[:, :4096], o, Fusion(residual=bufs["h"]))
    gu_ = int4_gemv.gemv(h2, gu, Fusion(norm=(bufs["n3"], 1e-6)))
    return int4_gemv.gemv(gu_, d, Fusion(silu_mul=True, residual=h2))


def timed(fn_list, replays=20):
    for f in fn_list[:2]:
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fn_list:
            f()
    g.replay()
    torch.cuda.synchronize()
    res = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(replays):
            g.replay()
        e.record()
        e.synchronize()
        res.append(s.elapsed_time(e) * 1000 / (replays * len(fn_list)))
    return sorted(res)[2]


def main():
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    print(torch.cuda.get_device_name(), sms, flush=True)
    proj = projections("qwen3-8b")
    layers = []
    for _ in range(8):
        layers.append(tuple(packed_weight(build(FORMATS["awq"](), *proj[name], dev))
                            for name in ("qkv", "o", "gate_up", "down")))
    bufs = {k: torch.zeros(1, n, dtype=torch.bfloat16, device=dev)
            for k, n in (("h", 4096), ("qkv", 6144), ("h2", 4096), ("gu", 24576), ("h3", 4096))}
    bufs["h"].normal_()
    bufs["n1"] = torch.randn(4096, dtype=torch.bfloat16, device=dev)
    bufs["n3"] = torch.randn(4096, dtype=torch.bfloat16, device=dev)
    bar = torch.zeros(2, dtype=torch.int32, device=dev)
    tree(bufs, layers[0])
    ref = {k: bufs[k].clone() for k in ("qkv", "h2", "gu", "h3")}
    print("tree (copies)", round(timed([lambda la=la: tree(bufs, la) for la in layers]), 2), flush=True)
    print("tree", round(timed([lambda la=la: tree_nocopy(bufs, la) for la in layers]), 2), flush=True)
    configs = {
        "tree-splits": ((4, 64, 1), (8, 64, 1), (1, 64, 2), (8, 64, 2)),
        "even": ((4, 64, 1), (4, 64, 1), (1, 64, 2), (4, 64, 2)),
        "bn32": ((2, 32, 1), (2, 32, 1), (1, 64, 2), (2, 32, 2)),
        "bn32-g1": ((2, 32, 1), (2, 32, 1), (1, 64, 1), (2, 32, 1)),
        "bn16": ((1, 16, 2), (1, 16, 2), (1, 64, 2), (1, 16, 4)),
    }
    for per_sm in tuple(int(a) for a in sys.argv[1:]) or (2, 3):
        P = per_sm * sms
        for name, cfg in configs.items():
            for prefetch in (0, 1, 4):
                key = f"P={per_sm}x{sms} {name} prefetch{prefetch}"
                try:
                    compiled = chain(bufs, layers[0], cfg, P, bar, prefetch, warmup=True)
                    compiled._init_handles()
                    regs, smem = compiled.n_regs, compiled.metadata.shared
                    resident = min(65536 // (max(regs, 1) * 128), (227 * 1024) // max(smem, 1), 16)
                    if resident < per_sm:
                        print(key, f"skipped: {regs} regs, {smem} B smem -> {resident} an SM", flush=True)
                        continue
                    for k in ref:
                        bufs[k].zero_()
                    chain(bufs, layers[0], cfg, P, bar, prefetch)
                    torch.cuda.synchronize()
                    same = all(torch.equal(bufs[k], ref[k]) for k in ref)
                    us = timed([lambda la=la: chain(bufs, la, cfg, P, bar, prefetch) for la in layers])
                    print(key, round(us, 2), "bit-equal" if same else "DIFFERS", f"regs {regs} smem {smem}", flush=True)
                except Exception as e:  # noqa: BLE001
                    print(key, "failed", repr(e)[:300], flush=True)


main()
