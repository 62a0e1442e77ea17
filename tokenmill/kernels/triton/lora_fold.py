"""A LoRA delta folded into the small-batch GEMVs of `skinny_gemm` (reference: `lora_reference.lora_delta`):
each row's B·A·f(x) costs no launch of its own.

At one token per step launches, not bytes, set the step time, and a separate delta kernel per projection
cost half a decode step (Qwen3-0.6B on an H100: 4 launches, 16.9 us per layer). So the GEMV that computes
a projection also computes its delta, in two kinds of program of one launch. The first programs of the
grid are shrink programs: each computes a block of one row's s = A·f(x) (after the same RMSNorm or
SiLU-and-mul prologue) as a one-token tile computes its outputs, A's rows standing for weight rows,
leaves it in `ShrinkScratch` and counts itself done. The tile programs after them run the base GEMV
untouched, then wait for the count and add B·s in their epilogue. When every tile program repeated its
row's shrink in its K loop instead, the A rows outweighed the weight rows of the narrow one-token tiles
(4 weight rows against 16 of A for Qwen3-0.6B's o and down) and the GEMVs took 1.8x the base's time.

Waiting inside a launch is safe because the GPU dispatches a grid's programs in order of id (what the
hardware does, though CUDA promises no order): every shrink program has an SM before any tile program
waits, and shrink programs never wait; the interpreter runs programs in order of id too.

A shrink program says it is done by adding one, after a barrier (every thread's stores are issued) and
with release semantics, to its projection's count (`ShrinkScratch.counts`, one per site); a tile
program polls that count with acquire until all the launch's shrink programs are in, then reads s past
L1 (.cg), where no line of an earlier launch can linger. The counts are zeroed once as each forward
starts, and a forward launches each site at most once (`LoRAStep.claim_site` checks it), so no tile
writes anything. A count every tile added itself to, and per-program flags polled one by one, were
slower (docs/benchmarks.md). The GPU image's Triton (3.6) has no acquire load, so the tiles poll with an
acquire add of 0.

Each row keeps its own adapter (the slots are a graph input, so one decode graph serves any mix), and a
row's s depends only on its own activations and the tile shape, not on the other rows. A row under
NO_ADAPTER loads nothing and leaves zeros; a shard its adapter does not target (rank 0 in
`LoRAWeights.ranks`) leaves zeros too, though its shrink programs load its A rows (zeros) rather than
wait on the ranks first (`shrink_program`).
"""

from __future__ import annotations

import itertools

import triton
import triton.language as tl
from torch import Tensor

from tokenmill.kernels.lora_mapping import MAX_LORA_SHARDS, MAX_SITES, LoRAWeights
from tokenmill.kernels.triton.gemv_rows import rows_rstd, tile_products

MIN_BLOCK_R = 16  # rank values a tile expands, at least (masked ones load nothing): one variant up to 16


@triton.jit
def adapter_rows(ranks_ptr, slot, r0, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr):
    """Rows r0 .. r0 + BLOCK_R of `slot`'s stacked A ([SHARDS * MAX_RANK, k], each shard's rank padded to
    MAX_RANK): their indices in the slot, which hold the adapter (none under NO_ADAPTER, nor in a shard
    the adapter does not target), and which exist in a slot (all of them but under NO_ADAPTER): the rows
    to load, known without waiting on the ranks."""
    r = r0 + tl.arange(0, BLOCK_R)
    shard = r // MAX_RANK
    slots = slot + tl.zeros([BLOCK_R], dtype=tl.int32)  # a block: the interpreter masks with no scalar
    in_slot = (slots >= 0) & (shard < SHARDS)
    rank = tl.load(ranks_ptr + slots * SHARDS + shard, mask=in_slot, other=0)
    return r, (r % MAX_RANK) < rank, in_slot


@triton.jit
def shrink_program(
    program, x_ptr, rows, k, stride_x, eps, norm_weight_ptr,
    lora_a_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, count_ptr,
    PROLOGUE: tl.constexpr, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """A shrink program: BLOCK_N rank rows of one row's s = A·f(x), A's rows of the row's
    slot taking a one-token tile's weight rows, rounded to the activation dtype as the batched path
    rounds A·x; zeros where the row's adapter holds no rank row (the expand multiplies them by B's
    masked zeros: they must be finite). A's loads wait on the slot alone: rows past the adapter's rank
    are loaded too (zeros, `LoRALinear.fill_slot`; with a large max rank and small adapters, bytes for
    nothing) and their s zeroed by the ranks, which arrive meanwhile. Waiting on the ranks first put a
    third round trip before the products (H100: 0.06 ms a single-stream step)."""
    blocks: tl.constexpr = (SHARDS * MAX_RANK + BLOCK_N - 1) // BLOCK_N
    row = program // blocks
    slot = tl.load(slots_ptr + row)
    r, held, loaded = adapter_rows(ranks_ptr, slot, program % blocks * BLOCK_N, SHARDS, MAX_RANK, BLOCK_N)
    row_ids = row + tl.arange(0, 1)
    row_mask = row_ids < rows
    x_rows = x_ptr + row_ids[:, None] * stride_x
    rstd = rows_rstd(x_rows, row_mask, k, eps, PROLOGUE, 1, BLOCK_K)
    a_rows = lora_a_ptr + (slot * SHARDS * MAX_RANK + r).to(tl.int64)[:, None] * k
    s = tile_products(
        x_rows, row_mask, rstd, a_rows, loaded, k, norm_weight_ptr, PROLOGUE, 1, BLOCK_N, BLOCK_K
    )
    s = tl.where(held[None, :], s.to(x_ptr.dtype.element_ty).to(tl.float32), 0.0)
    tl.store(shrinks_ptr + row_ids[:, None] * stride_s + r[None, :], s, mask=(r < SHARDS * MAX_RANK)[None, :])
    publish_shrink(count_ptr)


@triton.jit
def _first_rank_row(
    first_col, shard_end0, shard_end1, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr
):
    """The first rank row of s a column tile starting at `first_col` expands: its shard's first, or 0
    where BLOCK_R covers every shard."""
    r0 = 0
    if BLOCK_R < SHARDS * MAX_RANK:
        r0 = ((first_col >= shard_end0).to(tl.int32) + (first_col >= shard_end1).to(tl.int32)) * MAX_RANK
    return r0


@triton.jit
def publish_shrink(count_ptr):
    """Count a shrink program done once all its threads' stores are issued (the barrier), and visible to
    whoever reads the count with acquire (release)."""
    tl.debug_barrier()
    tl.atomic_add(count_ptr, 1, sem="release")


@triton.jit
def _await_shrinks(count_ptr, producers):
    """Poll the launch's count (acquire: the shrink programs' stores are visible once it is seen) until
    all `producers` shrink programs are in."""
    arrived = tl.atomic_add(count_ptr, 0, sem="acquire")
    while arrived < producers:
        arrived = tl.atomic_add(count_ptr, 0, sem="acquire")


@triton.jit
def expand_operands(
    row_ids, row_mask, cols, col_mask, lora_b_ptr, ranks_ptr, slots_ptr, n, first_col, shard_end0, shard_end1,
    SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """What the delta of the rows `row_ids` and the columns `cols` (from `first_col`) multiplies, apart
    from s: (B [BLOCK_M, BLOCK_N, BLOCK_R], each row's B of its own slot, each column taking the rank
    values of its own shard; the rank rows r of s). Three dependent loads (slots, ranks, B), so a tile
    issues them before its K loop, which hides them, and ends on the wait and s alone."""
    row_slots = tl.load(slots_ptr + row_ids, mask=row_mask, other=-1)
    r0 = _first_rank_row(first_col, shard_end0, shard_end1, SHARDS, MAX_RANK, BLOCK_R)
    col_shard = (cols >= shard_end0).to(tl.int32) + (cols >= shard_end1).to(tl.int32)
    r = r0 + tl.arange(0, BLOCK_R)
    within = r[None, :] - col_shard[:, None] * MAX_RANK  # [BLOCK_N, BLOCK_R]
    slots = row_slots[:, None]
    rank = tl.load(
        ranks_ptr + slots * SHARDS + col_shard[None, :], mask=(slots >= 0) & col_mask[None, :], other=0
    )
    b = tl.load(
        lora_b_ptr
        + (slots[:, :, None].to(tl.int64) * n + cols[None, :, None]) * MAX_RANK
        + within[None, :, :],
        mask=(within[None, :, :] >= 0) & (within[None, :, :] < rank[:, :, None]),
        other=0.0,
    )
    return b, r


@triton.jit
def expand(
    b, r, row_ids, row_mask, shrinks_ptr, stride_s, count_ptr, producers,
    SHARDS: tl.constexpr, MAX_RANK: tl.constexpr,
):  # fmt: skip
    """The [BLOCK_M, BLOCK_N] delta B·s, B and r from `expand_operands`, once the launch's shrink
    programs are in; s is read past L1 (.cg), where no line of an earlier launch can linger."""
    _await_shrinks(count_ptr, producers)
    s = tl.load(
        shrinks_ptr + row_ids[:, None] * stride_s + r[None, :],
        mask=row_mask[:, None] & (r < SHARDS * MAX_RANK)[None, :],
        other=0.0,
        cache_modifier=".cg",
    )
    return tl.sum(b.to(tl.float32) * s[:, None, :], 2)


def fold_args(
    lora: LoRAWeights | None, rows: int, n: int, block_n: int, placeholder: Tensor
) -> dict[str, object]:
    """The LoRA arguments of a launch of `rows` rows and tiles `block_n` columns wide. BLOCK_R covers the
    rank rows of one shard where every column tile lies in one shard (the shard boundaries are multiples
    of BLOCK_N, as head sizes make them), else of every shard. A shrink program takes BLOCK_N rank rows
    of one row, as a tile takes BLOCK_N weight rows, so it moves what a tile moves. Without LoRA,
    placeholders that keep the no-LoRA kernel one compiled variant, and no shrink program."""
    if lora is None:
        pointers = ("lora_a_ptr", "lora_b_ptr", "ranks_ptr", "slots_ptr", "shrinks_ptr", "counts_ptr")
        return dict(**dict.fromkeys(pointers, placeholder), stride_s=0, producers=0, site=0, shard_end0=0,
                    shard_end1=0, HAS_LORA=False, SHARDS=1, MAX_RANK=1, BLOCK_R=1)  # fmt: skip
    _, shards, max_rank, _ = lora.a.shape
    assert shards == len(lora.out_shards) <= MAX_LORA_SHARDS and sum(lora.out_shards) == n
    assert lora.a.is_contiguous() and lora.b.is_contiguous() and lora.ranks.is_contiguous()
    shrinks = lora.scratch.shrinks
    assert rows <= shrinks.shape[0] and shards * max_rank <= shrinks.shape[1], "s outgrows its scratch"
    assert 0 <= lora.site < MAX_SITES
    ends = [*itertools.accumulate(lora.out_shards)][:-1]
    one_shard_tiles = all(end % block_n == 0 for end in ends)
    block_r = max(MIN_BLOCK_R, triton.next_power_of_2(max_rank if one_shard_tiles else shards * max_rank))
    shard_end0, shard_end1 = [*ends, n, n][:2]
    return dict(
        lora_a_ptr=lora.a, lora_b_ptr=lora.b, ranks_ptr=lora.ranks, slots_ptr=lora.token_slots,
        shrinks_ptr=shrinks, counts_ptr=lora.scratch.counts, stride_s=shrinks.stride(0),
        producers=rows * triton.cdiv(shards * max_rank, block_n), site=lora.site, shard_end0=shard_end0,
        shard_end1=shard_end1, HAS_LORA=True, SHARDS=shards, MAX_RANK=max_rank, BLOCK_R=block_r,
    )  # fmt: skip
