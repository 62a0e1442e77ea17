"""Session 10: the GEMV variants and their monkeypatching setters (shared by s10_gemv.py and s10_single.py)."""
import torch
from tokenmill.kernels.triton import quant_gemv, int4_gemv, gemv_fusion
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile
SMS = num_sms(torch.device("cuda"))
BYTE_VARIANTS = {  # name -> (widest block_n, tile bytes, stages)
    "tree": (32, 32768, 1), "t32k-s2": (32, 32768, 2), "t32k-s3": (32, 32768, 3), "t16k-s3": (32, 16384, 3),
    "t16k-s4": (32, 16384, 4), "t8k-s4": (32, 8192, 4), "t8k-s6": (32, 8192, 6), "bn16-t16k-s3": (16, 16384, 3),
    "bn16-t16k-s4": (16, 16384, 4), "bn16-t8k-s6": (16, 8192, 6),
}
INT4_VARIANTS = {  # name -> (stages, split programs per SM, warps, block_n)
    "tree": (1, 2, 4, 64), "s3": (3, 2, 4, 64), "s4": (4, 2, 4, 64), "s3-p4": (3, 4, 4, 64), "s4-p4": (4, 4, 4, 64),
    "s6-p4": (6, 4, 4, 64), "s4-p4-bn128": (4, 4, 4, 128), "s4-p4-w8-bn128": (4, 4, 8, 128),
}

ORIG_DEFAULT = quant_gemv.default_shape

def set_byte(v):
    bn, tile, st = BYTE_VARIANTS[v]
    quant_gemv.default_shape = lambda packed, n, device, _o=ORIG_DEFAULT: (
        _o(packed, n, device) if packed else quant_gemv.GemvShape(widest_covering_tile(n, 1, bn, SMS), tile, st))

def set_int4(v):
    st, per_sm, warps, bn = INT4_VARIANTS[v]
    int4_gemv.STAGES, int4_gemv.NUM_WARPS, int4_gemv.BLOCK_N = st, warps, bn
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = per_sm


def reset():
    quant_gemv.default_shape = ORIG_DEFAULT
    set_int4("tree")
