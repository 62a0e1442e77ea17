"""Probe (s26): FP8 128 x 128 block GEMM for 128-2048 token rows as weights decoded to bf16 in registers
(fp32 times the tile's block scale, rounded to bf16: what `dequantize_fp8_blocks` gives) and a bf16 dot
into the running accumulator (no per-step scaling of the dot's result, so the K loop pipelines), L2
grouped program order; against the tree (`fp8_block_gemm`: fp8 dots, per-step scales) and the per-channel
route. Qwen3-8B's four projections; µs over graph replays of weight copies (> L2)."""
import itertools, json, math, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from f8mma_probe import timed
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemm
from tokenmill.quantization.fp8 import dequantize_fp8_blocks
from tokenmill.quantization.triton_gemms import use_triton_gemms


@triton.jit
def _kernel(x_ptr, w_ptr, s_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_sn, stride_om,
            BLOCK_OUT: tl.constexpr, BLOCK_IN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    first_m = (pid // width) * GROUP_M
    size = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size
    pid_n = (pid % width) // size
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask, n_mask = m < M, n < N
    s_row = s_ptr + (pid_n * BLOCK_N // BLOCK_OUT) * stride_sn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < K
        x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptr + n[None, :] * stride_wn + k[:, None], mask=k_mask[:, None] & n_mask[None, :], other=0)
        s = tl.load(s_row + k0 // BLOCK_IN)
        wb = (w.to(tl.float8e4nv, bitcast=True).to(tl.float32) * s).to(tl.bfloat16)
        acc = tl.dot(x, wb, acc)
    tl.store(out_ptr + m[:, None] * stride_om + n[None, :], acc.to(tl.bfloat16), mask=m_mask[:, None] & n_mask[None, :])


def launch(x, w, s, bm, bn, bk, warps, stages, group):
    m, k = x.shape
    n = w.shape[0]
    out = x.new_empty(m, n)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _kernel[grid](x, w.view(torch.uint8), s, out, m, n, k, x.stride(0), w.stride(0), s.stride(0), out.stride(0),
                  BLOCK_OUT=128, BLOCK_IN=128, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group,
                  num_warps=warps, num_stages=stages)
    return out


dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
summary = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    n = sum(shards)
    first = build(FORMATS["fp8-block"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    layers = [first] + [build(FORMATS["fp8-block"](), inp, shards, dev) for _ in range(max(1, math.ceil(400e6 / size) - 1))]
    chan = build(FORMATS["fp8-channel"](), inp, shards, dev)
    use_triton_gemms(chan)
    dense_w = dequantize_fp8_blocks(first.weight, first.weight_scale_inv, (128, 128)).to(torch.bfloat16)
    for m in (128, 512, 2048):
        x = torch.randn(m, inp, dtype=torch.bfloat16, device=dev)
        ref = (x.float() @ dense_w.float().T)
        res = {"tree": timed([lambda la=la: fp8_gemm.fp8_block_gemm(x, la.weight, la.weight_scale_inv, (128, 128)) for la in layers]),
               "channel": timed([lambda: chan(x)] * 4)}
        tree_err = ((fp8_gemm.fp8_block_gemm(x, first.weight, first.weight_scale_inv, (128, 128)).float() - ref).abs().max() / ref.abs().max()).item()
        errs = {}
        for bm, bn, bk, warps, stages, group in itertools.product((64, 128), (64, 128), (64, 128), (4, 8), (3, 4), (8,)):
            if bm * bn * bk > 128 * 128 * 128 or (bm == 128 and m < 128):
                continue
            key = f"bm{bm} bn{bn} bk{bk} w{warps} s{stages}"
            try:
                got = launch(x, first.weight, first.weight_scale_inv, bm, bn, bk, warps, stages, group).float()
                errs[key] = ((got - ref).abs().max() / ref.abs().max()).item()
                res[key] = timed([lambda la=la: launch(x, la.weight, la.weight_scale_inv, bm, bn, bk, warps, stages, group) for la in layers])
            except Exception as e:  # noqa: BLE001
                print(name, m, key, "failed", repr(e)[:150], flush=True)
        best = sorted((v, k) for k, v in res.items() if k not in ("tree", "channel"))
        print(json.dumps({"proj": name, "m": m, "tree": round(res["tree"], 2), "channel": round(res["channel"], 2),
                          "tree_err": round(tree_err, 5), "best": [(round(v, 2), k, round(errs[k], 5)) for v, k in best[:4]]}), flush=True)
        for k, v in res.items():
            summary.setdefault(m, {}).setdefault(k, 0.0)
            summary[m][k] += v
    del layers
    torch.cuda.empty_cache()
for m, per in summary.items():
    best = sorted((v, k) for k, v in per.items() if k not in ("tree", "channel"))
    print(f"SUM m={m} tree {per['tree']:.1f} channel {per['channel']:.1f}", json.dumps([(round(v, 1), k) for v, k in best[:5]]), flush=True)
