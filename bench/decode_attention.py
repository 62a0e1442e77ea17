"""Achieved bandwidth of the decode attention kernel per context length, against the copy bandwidth.

Qwen3-0.6B's attention shape (16 query heads, 8 KV heads, head_dim 128, 16-token blocks) at a batch of
358 sequences (qa-358) and of 1 (single stream); block tables shuffled as a busy cache leaves them. Each
tiling (tokens per tile, warps, pipeline stages) is checked against the PyTorch reference, compiled and
warmed up before it is timed with CUDA events; bytes are the K and V the step must read. The copy
bandwidth is a device-to-device `copy_` of 1 GiB (read + write).
Usage: PYTHONPATH=. python bench/decode_attention.py [--out decode-attention.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import torch

from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.reference import paged_attention as reference_attention
from tokenmill.kernels.triton.attention import (
    DEFAULT_DECODE_TILING,
    DecodeTiling,
    _decode_kernel,
    decode_attention,
)
from tokenmill.kernels.triton.paged import decode_splits

HEADS, KV_HEADS, HEAD_DIM, PAGE = 16, 8, 128, 16
CONTEXTS = (128, 256, 512, 1024, 4096)
TILINGS = [DecodeTiling(*t) for t in [(64, 2, 3), (64, 4, 3), (64, 4, 1), (32, 2, 1)]]


def timed(fn, iters: int = 20) -> float:
    """Median seconds per call of `fn` (already compiled and warm)."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def copy_bandwidth() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() / timed(lambda: dst.copy_(src))


def make_batch(num_seqs: int, context: int, cache_dtype: torch.dtype) -> dict:
    """A cache holding every sequence's context in shuffled blocks; fp8 has one scale per tensor (k, v),
    int8 one per token and KV head."""
    blocks_per_seq = -(-context // PAGE)
    num_blocks = num_seqs * blocks_per_seq
    shape = (2, num_blocks + 1, PAGE, KV_HEADS, HEAD_DIM)
    if cache_dtype == torch.int8:
        cache = torch.randint(-127, 128, shape, dtype=torch.int8, device="cuda")
        scales = torch.rand(shape[:-1], device="cuda") * 0.02 + 0.001
    else:
        cache = torch.randn(shape, device="cuda").to(cache_dtype)
        fp8 = cache_dtype == torch.float8_e4m3fn
        scales = torch.tensor([0.5, 0.25], device="cuda") if fp8 else None
    tables = torch.randperm(num_blocks, device="cuda", dtype=torch.int32).view(num_seqs, blocks_per_seq)
    seq_lens = torch.full((num_seqs,), context, dtype=torch.int32, device="cuda")
    q = torch.randn(num_seqs, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    starts = torch.arange(num_seqs + 1, dtype=torch.int32, device="cuda")
    return dict(q=q, cache=cache, tables=tables, seq_lens=seq_lens, starts=starts, scales=scales)


def compiled_kernels() -> dict:
    """The decode kernel's compiled variants on this device, by cache key."""
    return dict(_decode_kernel.device_caches[torch.cuda.current_device()][0])


def resources(batch: dict, splits: int, tiling: DecodeTiling) -> dict:
    """Registers, spills and shared memory of the variant `tiling` compiles to (what bounds how many
    programs an SM holds at once)."""
    before = compiled_kernels()
    run(batch, splits, tiling)
    added = [kernel for key, kernel in compiled_kernels().items() if key not in before]
    if not added:
        return {}
    kernel = added[0]
    return {"registers": kernel.n_regs, "spills": kernel.n_spills, "shared_bytes": kernel.metadata.shared}


def run(batch: dict, splits: int, tiling: DecodeTiling) -> torch.Tensor:
    return decode_attention(
        batch["q"], batch["cache"], batch["tables"], batch["seq_lens"], HEAD_DIM**-0.5, splits,
        batch["scales"], tiling=tiling, query_start_loc=batch["starts"],
    )  # fmt: skip


def reference(batch: dict) -> torch.Tensor:
    n = batch["q"].shape[0]
    seq_lens = batch["seq_lens"].tolist()
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(n, dtype=torch.long, device="cuda"),
        block_tables=batch["tables"],
        seq_lens=batch["seq_lens"],
        query_start_loc=batch["starts"],
        num_decodes=n,
        seq_lens_cpu=seq_lens,
        query_lens_cpu=[1] * n,
        block_size=PAGE,
    )
    return reference_attention(batch["q"], batch["cache"], meta, HEAD_DIM**-0.5, batch["scales"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy_bw = copy_bandwidth()
    results = {"device": torch.cuda.get_device_name(), "copy_bytes_per_s": copy_bw, "runs": []}
    print(f"{results['device']}: copy {copy_bw / 1e12:.2f} TB/s")
    ok = True
    for cache_dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.int8):
        print(f"--- {cache_dtype}, default tiling {DEFAULT_DECODE_TILING}")
        for num_seqs in (358, 1):
            for context in CONTEXTS:
                batch = make_batch(num_seqs, context, cache_dtype)
                splits = decode_splits(num_seqs, KV_HEADS, context, sms)
                expected = reference(batch)
                kv_bytes = 2 * num_seqs * context * KV_HEADS * HEAD_DIM * batch["cache"].element_size()
                row = []
                for tiling in TILINGS:
                    used = resources(batch, splits, tiling)
                    if used:
                        print(f"  {tiling}: {used}")
                    error = (run(batch, splits, tiling).float() - expected.float()).abs().max().item()
                    ok &= error < 0.05
                    seconds = timed(functools.partial(run, batch, splits, tiling))
                    bw = kv_bytes / seconds
                    tag = f"{tiling.block_n}/{tiling.num_warps}/{tiling.stages}"
                    row.append(f"{tag}:{bw / copy_bw:.2f}")
                    results["runs"].append({
                        "cache": str(cache_dtype), "num_seqs": num_seqs, "context": context, "splits": splits,
                        "tiling": vars(tiling), "default": tiling == DEFAULT_DECODE_TILING,
                        "us": seconds * 1e6, "bytes_per_s": bw, "of_copy": bw / copy_bw,
                        "max_abs_error": error, **used,
                    })  # fmt: skip
                print(f"seqs {num_seqs:>3} ctx {context:>4} splits {splits:>2}: " + " ".join(row))
    print("all tilings match the reference" if ok else "A TILING DISAGREES WITH THE REFERENCE")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
