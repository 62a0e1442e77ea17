"""Session 10 probe: variants of the byte GEMV (fp8 / int8 per channel, one token): VARIANT 0 the tree's loop,
1 the RMSNorm weight loaded in x's 2D layout (no layout conversion for it), 2 loads only (diagnostic: wrong
sums), 3 tensor cores (x in row 0 of a 16-row tile, the weight tile converted to bf16, tl.dot)."""
import torch, triton
import triton.language as tl
from tokenmill.kernels.triton.gemv_fusion import row_rstd, store_row, row_inputs
from tokenmill.kernels.triton.quant_gemv import _decode_bytes, _tile_and_row, BYTE_CHUNK_ELEMENTS, native_fp8
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile
from tokenmill.kernels.triton.weight_only_gemm import INT8


@triton.jit
def _inputs_2d(x_row, k, K, norm_weight_ptr, rstd, PROLOGUE: tl.constexpr):
    k_mask = (k < K)[None, :]
    x = tl.load(x_row + k[None, :], mask=k_mask, other=0.0)
    dtype = x.dtype
    if PROLOGUE == 1:
        second = tl.load(norm_weight_ptr + k[None, :], mask=k_mask, other=0.0)
        out = (second * (x.to(tl.float32) * rstd).to(dtype)).to(tl.float32)
    elif PROLOGUE == 2:
        up = tl.load(x_row + K + k[None, :], mask=k_mask, other=0.0)
        xf = x.to(tl.float32)
        out = (xf * tl.sigmoid(xf) * up.to(tl.float32)).to(dtype).to(tl.float32)
    else:
        out = x.to(tl.float32)
    return out


@triton.jit(do_not_specialize=["rows"])
def _byte_gemv_probe(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, N, K,
    stride_x, stride_w, stride_o, stride_r, eps,
    FORMAT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, VARIANT: tl.constexpr,
):  # fmt: skip
    tile, row = _tile_and_row(rows)
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    if VARIANT == 3:
        acc = tl.zeros([16, BLOCK_N], tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, CHUNK], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            k = k0 + c * CHUNK + tl.arange(0, CHUNK)
            if VARIANT == 0:
                x = row_inputs(x_row, k, K, norm_weight_ptr, rstd, PROLOGUE)
            else:
                x = _inputs_2d(x_row, k, K, norm_weight_ptr, rstd, PROLOGUE)
            stored = tl.load(
                w_ptr + n[:, None] * stride_w + k[None, :], mask=n_mask[:, None] & (k < K)[None, :], other=0
            )
            if VARIANT == 2:
                acc += stored.to(tl.float32)
            elif VARIANT == 3:
                if FORMAT == INT8:
                    w = stored.to(tl.bfloat16)
                else:
                    w = stored.to(tl.float8e4nv, bitcast=True).to(tl.bfloat16)
                a = tl.where(tl.arange(0, 16)[:, None] == 0, x, 0.0).to(tl.bfloat16)
                acc = tl.dot(a, tl.trans(w), acc)
            else:
                w = _decode_bytes(stored, FORMAT, True)
                acc += w * x
    if VARIANT == 3:
        y = tl.sum(acc, 0)
    else:
        y = tl.sum(acc, 1)
    y = y * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def gemv(x, weight, fusion, variant: int, maxnreg: int | None = None, tile_bytes: int = 32768, widest: int = 32, stages: int | None = None):
    from tokenmill.kernels.triton.weight_only_gemm import WeightFormat
    is_int8 = weight.format == WeightFormat.INT8
    w, scales = weight.weight, weight.scales
    rows, k = x.shape[0], fusion.in_features(x)
    n = w.shape[0]
    out = x.new_empty(rows, n)
    block_n = widest_covering_tile(n, 1, widest, num_sms(x.device))
    block_k = min(triton.next_power_of_2(k), tile_bytes // block_n)
    chunk = min(block_k, BYTE_CHUNK_ELEMENTS // block_n)
    options = {} if maxnreg is None else {"maxnreg": maxnreg}
    if stages is not None:
        options["num_stages"] = stages
    args = fusion.kernel_args(x)
    args.pop("stride_r", None)
    _byte_gemv_probe[(triton.cdiv(n, block_n) * rows,)](
        x_ptr=x, w_ptr=w.view(torch.uint8) if not is_int8 else w, scale_ptr=scales, out_ptr=out,
        rows=rows, N=n, K=k, stride_x=x.stride(0), stride_w=w.stride(0), stride_o=out.stride(0),
        stride_r=0 if fusion.residual is None else fusion.residual.stride(0), **args,
        FORMAT=0 if is_int8 else 1, BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=chunk, VARIANT=variant,
        num_warps=8 if block_n * chunk >= 8192 else 4, **options,
    )  # fmt: skip
    return out
