"""Static SASS of the decode GEMVs' hot loop (compiled for sm_90 on the CPU): instruction count by opcode
in the innermost loop body, per weight / word."""
import collections, os, re, subprocess, sys, tempfile
sys.path.insert(0, os.environ.get("TREE", ".")); sys.path.append("/work/main")
import torch, triton
from tests.helpers.gpu_compile import compile_for

def _pointer(dtype):
    return torch.empty(1, dtype=dtype)
def _fusion_args(pointer, prologue, bias, residual):
    return dict(norm_weight_ptr=pointer, bias_ptr=pointer, residual_ptr=pointer, stride_r=4096, eps=1e-6,
                PROLOGUE=prologue, HAS_BIAS=bias, HAS_RESIDUAL=residual, NORM_BLOCK=1024)
from tokenmill.kernels.triton import fp8_gemv, int4_gemv

NVDIS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")


def loops(cubin):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin); f.flush()
        text = subprocess.run([NVDIS, "-c", f.name], capture_output=True, text=True).stdout
    ins, labels, pending = [], {}, []
    for line in text.splitlines():
        lm = re.match(r"\s*(\.L_x_\d+):", line)
        if lm:
            pending.append(lm.group(1)); continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            for l in pending: labels[l] = len(ins)
            pending = []
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    found = []
    for i, (a, t) in enumerate(ins):
        m = re.search(r"BRA\s+`\((\.L_x_\d+)\)", t)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            found.append((labels[m.group(1)], i))
    return ins, found


def report(name, cubin, per):
    ins, found = loops(cubin)
    if not found:
        print(name, "no loop found; total", len(ins)); return
    s, e = max(found, key=lambda p: p[1] - p[0])
    body = [t for _, t in ins[s:e + 1]]
    ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
    print(f"{name}: loop {len(body)} instr, {len(body)/per:.2f} per {'weight' if 'int4' in name else 'byte'}/thread-step")
    print("   ", dict(ops.most_common(40)))


bf16, i32, f32 = _pointer(torch.bfloat16), _pointer(torch.int32), _pointer(torch.float32)
cap = 90
for groups, bn in ((1, 64), (2, 64)):
    for pro in (0, 1):
        sizes = {"rows": 1, "N": 24576, "K": 4096, "stride_x": 4096, "stride_o": 24576}
        cub = compile_for(int4_gemv._int4_gemv_kernel, cap, {"num_warps": 4}, aligned=True, x_ptr=bf16, w_ptr=i32,
                          scale_ptr=_pointer(torch.float16), zero_ptr=i32, out_ptr=bf16, partial_ptr=f32, count_ptr=i32,
                          **sizes, k_per_split=4096, **_fusion_args(bf16, pro, False, False), stride_wk=24576,
                          stride_sg=24576, stride_zg=3072, ZERO_OFFSET=0, GROUP=128, SPLIT=1, BLOCK_N=bn,
                          BLOCK_K=128, GROUPS=groups, USE_ASM=True)
        # weights per thread per step: groups*128*bn/128 threads
        report(f"int4 g{groups} bn{bn} prologue{pro}", cub, groups * 128 * bn / 128)
for block in (None, (128, 128)):
    for bn, bk in ((16, 512), (32, 256)):
        sizes = {"rows": 1, "N": 24576, "K": 4096, "stride_x": 4096, "stride_o": 24576}
        opts = {"num_warps": 4, "maxnreg": 80} if bn == 32 else {"num_warps": 4}
        cub = compile_for(fp8_gemv._fp8_gemv_kernel, cap, opts, aligned=True, x_ptr=bf16, w_ptr=i32, scale_ptr=f32,
                          out_ptr=bf16, partial_ptr=f32, count_ptr=i32, **sizes, k_per_split=4096,
                          **_fusion_args(bf16, 1, False, False), stride_w=1024, stride_s=32 if block else 0, SPLIT=1,
                          BLOCK_N=bn, BLOCK_K=bk, USE_ASM=True, NATIVE_FP8=True, BLOCK_OUT=block[0] if block else 0,
                          BLOCK_IN=block[1] if block else 0)
        report(f"fp8 {'block' if block else 'chan'} {bn}x{bk}", cub, bn * bk / 128)
