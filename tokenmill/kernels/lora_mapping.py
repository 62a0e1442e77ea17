"""Which resident LoRA slot each token of a step runs under: the contract between the runner and the
batched LoRA kernels (`Ops.lora_shrink`, `Ops.lora_expand`, and `Ops.silu_and_mul` with an expand).

Tokens are grouped by slot, punica/S-LoRA style: `sorted_tokens` lists the batch's token indices ordered
by slot, and each slot's run of them is cut into tiles of `TILE_TOKENS`. Tile i covers
`sorted_tokens[tile_starts[i] : tile_ends[i]]`, all under slot `tile_slots[i]`, so a kernel program
multiplies by one adapter's matrices. Tokens without an adapter are in no tile and cost nothing. A step
of T tokens has at most `max_tiles(T, slots)` tiles; the rest are marked NO_ADAPTER, so the launch shape
depends only on T and the slot count, and a CUDA graph replays it for any mix of adapters. The tensors
are persistent buffers refilled in place each step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

NO_ADAPTER = -1
# The largest `max_lora_rank` the fused small-batch GEMVs fold in: their A tile and the expand's product
# grow with the rank (rank 64 compiles without spills on sm_90; 256 would not fit sm_120's shared memory).
MAX_FOLDED_RANK = 64
MAX_LORA_SHARDS = 3  # fused shards one projection's adapter spans: q|k|v at most
# The largest rank whose delta the residual RMSNorm adds a row at a time (`LoRAExpand.b_by_rank`): its
# rank loop is unrolled, and each unrolled row of B is one more load in flight.
ROW_DELTA_MAX_RANK = 32
MAX_SITES = 4096  # LoRA-wrapped projections a model may have, each counting at its own site
TILE_TOKENS = 16


def max_tiles(num_tokens: int, num_slots: int) -> int:
    """Tiles a step can need: each slot's last tile may be partial."""
    return -(-num_tokens // TILE_TOKENS) + num_slots


@dataclass(frozen=True)
class LoRAMapping:
    token_slots: torch.Tensor  # [tokens] int32: the slot of each token, NO_ADAPTER for the base model
    # [tokens] int32: every token index once, grouped by slot (the base model's first): a kernel that
    # writes each token's output in this order (SiLU-and-mul with gate|up's expand) writes them all
    sorted_tokens: torch.Tensor
    tile_slots: torch.Tensor  # [tiles] int32: the slot of each tile, NO_ADAPTER past the last
    tile_starts: torch.Tensor  # [tiles] int32: where each tile's tokens start in sorted_tokens
    tile_ends: torch.Tensor  # [tiles] int32: and where they end (at most TILE_TOKENS later)

    @classmethod
    def packed(cls, buffer: torch.Tensor, max_tokens: int, num_slots: int) -> LoRAMapping:
        """Views of `buffer` ([packed_size] int32) laid out in PACKED_ORDER, set to a mapping in which no
        token has an adapter (what CUDA graphs are captured with), its tokens in order. A step's upload
        then rewrites each array's first entries only: its kernels' grids are sized from its own token
        count, so they never read the tails past them."""
        views = {}
        for name, (offset, size) in packed_layout(max_tokens, num_slots).items():
            views[name] = buffer[offset : offset + size].fill_(PACKED_FILL.get(name, 0))
        views["sorted_tokens"].copy_(torch.arange(max_tokens, dtype=torch.int32))
        return cls(**views)


# The arrays of a mapping in one buffer, the short tile arrays first and token_slots last: a step's
# arrays lie within one prefix of it, so one copy uploads them (`LoRAStep.load`) where there were five
# (the prefix holds the unused tails of the first four too: at most max_tokens + 3 * max_tiles values).
PACKED_ORDER = ("tile_slots", "tile_starts", "tile_ends", "sorted_tokens", "token_slots")
# What `LoRAMapping.packed` starts each array at: these, 0 for the tile bounds, 0, 1, ... for sorted_tokens
PACKED_FILL = {"tile_slots": NO_ADAPTER, "token_slots": NO_ADAPTER}


def packed_layout(max_tokens: int, num_slots: int) -> dict[str, tuple[int, int]]:
    """Each array's (offset, length) in a packed buffer for steps of up to `max_tokens` tokens."""
    tiles = max_tiles(max_tokens, num_slots)
    lengths = dict(tile_slots=tiles, tile_starts=tiles, tile_ends=tiles, sorted_tokens=max_tokens,
                   token_slots=max_tokens)  # fmt: skip
    offsets = np.cumsum([0] + [lengths[name] for name in PACKED_ORDER]).tolist()
    return {name: (offsets[i], lengths[name]) for i, name in enumerate(PACKED_ORDER)}


def packed_size(max_tokens: int, num_slots: int) -> int:
    """The values a packed buffer holds."""
    offset, length = packed_layout(max_tokens, num_slots)[PACKED_ORDER[-1]]
    return offset + length


@dataclass(frozen=True)
class ShrinkScratch:
    """Where a fused GEMV's shrink programs leave each row's A·f(x) for its tile programs, and the count
    of shrink programs done that the tiles wait on (`lora_fold`). Allocated once, before CUDA graphs are
    captured, so every graph reads the same addresses. One set serves every projection of the model:
    launches on one stream run one after another (no programmatic dependent launch), so no two of them
    use it at the same time.

    Each projection counts at its own site, and a forward launches each site at most once, so zeroing
    every count as a forward starts (`begin_forward`, on the device: inside a captured graph too) is the
    only reset: no tile program writes anything, and no launch waits on another's count."""

    shrinks: torch.Tensor  # [rows, MAX_LORA_SHARDS * MAX_FOLDED_RANK] float32 (values in the model dtype)
    counts: torch.Tensor  # [MAX_SITES] int32: each site's shrink programs done in this forward

    @classmethod
    def allocate(cls, rows: int, device: torch.device) -> ShrinkScratch:
        """Room for `rows` rows (the widest small batch) of any foldable adapter."""
        width = MAX_LORA_SHARDS * MAX_FOLDED_RANK
        return cls(
            torch.zeros(rows, width, device=device), torch.zeros(MAX_SITES, dtype=torch.int32, device=device)
        )

    def begin_forward(self) -> None:
        """Zero every site's count for the forward about to run (each of its sites launching at most once)."""
        self.counts.zero_()


@dataclass(frozen=True)
class LoRAWeights:
    """One projection's resident adapters and each row's slot: what a fused small-batch GEMV needs to add
    every row's LoRA delta B·A·f(x) to its output in the same launch (reference:
    `lora_reference.lora_delta`)."""

    a: torch.Tensor  # [slots, shards, max_rank, in] contiguous, each rank zero-padded to max_rank
    b: torch.Tensor  # [slots, out, max_rank] contiguous, each adapter's scale folded in
    ranks: torch.Tensor  # [slots, shards] int32: a slot's rank per shard, 0 where its adapter skips it
    out_shards: tuple[int, ...]  # the fused shards' output widths (q|k|v, gate|up)
    token_slots: torch.Tensor  # [rows] int32: each row's slot, NO_ADAPTER for the base model
    scratch: ShrinkScratch  # where its shrink programs leave s: one for every projection of the model
    site: int  # the projection's index in the model, below MAX_SITES: where its shrink programs count


@dataclass(frozen=True)
class LoRAExpand:
    """One projection's expand, y += (Σ parts of h)·Bᵀ under each token's slot (`Ops.lora_expand`), left
    for the kernel that reads y next (SiLU-and-mul after gate|up, the residual RMSNorm after o and down)
    to add as it loads y: y then goes through memory once, and the step has one launch fewer."""

    h: torch.Tensor  # [parts, tokens, slots or 1, shards, rank]: a shrink's, or every slot's x·Aᵀ
    b: torch.Tensor  # [slots, out, rank], each adapter's scale folded in
    ranks: torch.Tensor  # [slots, shards] int32
    out_shards: tuple[int, ...]  # the fused shards' output widths
    mapping: LoRAMapping
    # [slots, rank, out]: B rank-major, for a kernel that adds the delta a row at a time (each rank's
    # row of B then loads contiguously); single-shard projections up to ROW_DELTA_MAX_RANK, else None
    b_by_rank: torch.Tensor | None = None

    def add_to(self, y: torch.Tensor, lora_expand: Callable[..., None]) -> None:
        """Run the expand on its own: y += the delta, in place, by `lora_expand` (an `Ops.lora_expand`)."""
        lora_expand(y, self.h, self.b, self.ranks, self.out_shards, self.mapping)


def tiles(token_slots: np.ndarray, num_slots: int) -> tuple[np.ndarray, ...]:
    """Host side: (sorted_tokens, tile_slots, tile_starts, tile_ends), all int32, of per-token slots;
    the tile arrays are `max_tiles(len(token_slots), num_slots)` long."""
    order = np.argsort(token_slots, kind="stable").astype(np.int32)
    counts = np.bincount(token_slots[token_slots >= 0], minlength=num_slots)
    starts = np.cumsum(counts) - counts + np.count_nonzero(token_slots < 0)
    per_slot = -(-counts // TILE_TOKENS)
    slot_of_tile = np.repeat(np.arange(num_slots), per_slot)
    first_tile = np.repeat(np.cumsum(per_slot) - per_slot, per_slot)
    tile_starts = starts[slot_of_tile] + (np.arange(len(slot_of_tile)) - first_tile) * TILE_TOKENS
    tile_ends = np.minimum(tile_starts + TILE_TOKENS, (starts + counts)[slot_of_tile])
    size = max_tiles(len(token_slots), num_slots)

    def padded(values: np.ndarray, fill: int) -> np.ndarray:
        out = np.full(size, fill, dtype=np.int32)
        out[: len(values)] = values
        return out

    return order, padded(slot_of_tile, NO_ADAPTER), padded(tile_starts, 0), padded(tile_ends, 0)
