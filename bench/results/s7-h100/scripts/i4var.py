"""int4_gemv launch variants (BLOCK_N, warps, programs per SM) for .k3/rot.py."""
import triton
from tokenmill.kernels.triton import int4_gemv as m
from tokenmill.kernels.triton.gemv_fusion import split_count, split_scratch
from tokenmill.kernels.triton import gemv_fusion
from tokenmill.kernels.triton.split_k import num_sms


def gemv(x, weight, fusion, block_n=64, warps=4, per_sm=4):
    rows, k, n = x.shape[0], fusion.in_features(x), weight.out_features
    out = x.new_empty(rows, n)
    tiles = triton.cdiv(n, block_n)
    old = gemv_fusion.SPLIT_PROGRAMS_PER_SM
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = per_sm
    split = split_count(tiles, k, m.BLOCK_K, block_n, num_sms(x.device))
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = old
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    m._int4_gemv_kernel[(tiles * rows * split,)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, out_ptr=out, **split_scratch(x.device),
        rows=rows, N=n, K=k, k_per_split=triton.cdiv(triton.cdiv(k, split), m.BLOCK_K) * m.BLOCK_K,
        stride_x=x.stride(0), stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg,
        stride_o=out.stride(0), **fusion.kernel_args(x), ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        SPLIT=split, BLOCK_N=block_n, BLOCK_K=m.BLOCK_K, USE_ASM=True, num_warps=warps)
    return out


gemv.configs = [dict(block_n=b, warps=w, per_sm=p) for b, w, p in [
    (64, 4, 4), (64, 4, 8), (64, 2, 4), (64, 2, 8), (128, 4, 4), (128, 4, 8), (128, 8, 8), (32, 2, 8), (32, 4, 8), (64, 8, 8)]]
