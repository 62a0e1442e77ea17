"""Session 9: decode attention at Qwen3-4B's shape (32 heads, 8 KV heads), 358 sequences: bf16 cache vs fp8
(the shipped kernel converting e4m3 -> bf16, and the tree's variant) over tilings."""
import functools, importlib.util, sys
import torch
sys.path.insert(0, "bench")
import decode_attention as da
from tokenmill.kernels.triton.attention import DecodeTiling
from tokenmill.kernels.triton import attention as tree
from tokenmill.kernels.triton.paged import decode_splits
spec = importlib.util.spec_from_file_location("attention_orig", ".k4/attention_orig.py")
orig = importlib.util.module_from_spec(spec); sys.modules["attention_orig"] = orig; spec.loader.exec_module(orig)
da.HEADS = 32
sms = torch.cuda.get_device_properties(0).multi_processor_count
copy_bw = da.copy_bandwidth()
print(f"copy {copy_bw/1e12:.2f} TB/s")
tilings = [DecodeTiling(*t) for t in [(64, 2, 3), (128, 2, 3), (128, 4, 3), (64, 4, 3), (128, 4, 2), (256, 4, 2)]]
def run(mod, batch, splits, tiling):
    return mod.decode_attention(batch["q"], batch["cache"], batch["tables"], batch["seq_lens"], da.HEAD_DIM**-0.5, splits,
        batch["scales"], tiling=tiling, query_start_loc=batch["starts"])
for ctx in (128, 256, 512):
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        batch = da.make_batch(358, ctx, dtype)
        splits = decode_splits(358, da.KV_HEADS, ctx, sms)
        expected = da.reference(batch).float()
        kv_bytes = 2 * 358 * ctx * da.KV_HEADS * da.HEAD_DIM * batch["cache"].element_size()
        mods = [("orig", orig)] + ([("tree", tree)] if dtype != torch.bfloat16 else [])
        for t in tilings:
            line = []
            for name, mod in mods:
                f = functools.partial(run, mod, batch, splits, t)
                err = (f().float() - expected).abs().max().item()
                s = min(da.timed(f) for _ in range(3))
                line.append(f"{name} {s*1e6:7.1f} us {kv_bytes/s/copy_bw:5.2f} err {err:.3f}")
            print(f"ctx {ctx} {str(dtype)[6:]:14s} {t.block_n:3d}/{t.num_warps}/{t.stages}: " + " | ".join(line))
