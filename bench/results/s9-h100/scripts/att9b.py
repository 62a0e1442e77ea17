"""Session 9: decode attention at Qwen3-4B's shape, 358 sequences: cache layouts (token-major NHD as shipped,
head-major HND as a permuted view), block tables shuffled vs in order, bf16 vs fp8, over tilings."""
import functools, sys
import torch
sys.path.insert(0, "bench")
import decode_attention as da
from tokenmill.kernels.triton.attention import DecodeTiling, decode_attention
from tokenmill.kernels.triton.paged import decode_splits
da.HEADS = 32
sms = torch.cuda.get_device_properties(0).multi_processor_count
copy_bw = da.copy_bandwidth()
print(f"copy {copy_bw/1e12:.2f} TB/s")
tilings = [DecodeTiling(*t) for t in [(64, 2, 3), (128, 4, 2), (64, 4, 1), (128, 4, 1), (64, 2, 1), (32, 2, 1)]]
def run(batch, splits, tiling):
    return decode_attention(batch["q"], batch["cache"], batch["tables"], batch["seq_lens"], da.HEAD_DIM**-0.5, splits,
        batch["scales"], tiling=tiling, query_start_loc=batch["starts"])
for ctx in (128, 256):
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        base = da.make_batch(358, ctx, dtype)
        splits = decode_splits(358, da.KV_HEADS, ctx, sms)
        kv_bytes = 2 * 358 * ctx * da.KV_HEADS * da.HEAD_DIM * base["cache"].element_size()
        cache = base["cache"]
        hnd = cache.permute(0, 1, 3, 2, 4).contiguous().permute(0, 1, 3, 2, 4)  # same values, head-major storage
        assert torch.equal(hnd.float(), cache.float()) and hnd.stride(3) == da.PAGE * da.HEAD_DIM
        ordered = torch.arange(base["tables"].numel(), device="cuda", dtype=torch.int32).view_as(base["tables"])
        for layout, c in (("NHD", cache), ("HND", hnd)):
            for order, tables in (("shuffled", base["tables"]), ("ordered", ordered)):
                batch = dict(base, cache=c, tables=tables)
                expected = da.reference(batch).float()
                line = []
                for t in tilings:
                    f = functools.partial(run, batch, splits, t)
                    err = (f().float() - expected).abs().max().item()
                    assert err < 0.05, err
                    s = min(da.timed(f) for _ in range(3))
                    line.append(f"{t.block_n}/{t.num_warps}/{t.stages} {s*1e6:6.1f} ({kv_bytes/s/copy_bw:4.2f})")
                print(f"ctx {ctx} {str(dtype)[6:]:13s} {layout} {order:8s}: " + "  ".join(line))
