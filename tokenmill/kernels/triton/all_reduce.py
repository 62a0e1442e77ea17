"""A one-way all-reduce for small activations between GPUs that map each other's memory.

A barrier-based one-shot all-reduce pays two round trips over NVLink per call (signal the peers, wait
for theirs; then again before the buffer may be reused). Here every 32-bit word of data travels with
a 32-bit flag in the same 8-byte store (NCCL's "LL" protocol), so a receiver knows a word has arrived
when its flag reads the call's epoch: one hop, no barrier, no fence. Each rank writes its words into
every peer's receive slots, then polls its own slots and sums the ranks' words in rank order (so every
rank computes the same bits). Two sets of slots, alternated by epoch, make a barrier at the end
unnecessary: a rank reuses a set only after its peers have sent the next call's words, which they do
only after they finished reading this one (stream order).

Epochs are counted per program (a program's counter is touched by that program alone), and every
rank launches the same programs in the same order, so the ranks' counters agree without talking. Word
offset o is always handled by program (o // block) % MAX_PROGRAMS, whatever the call's size, so two
calls that both reach o are one epoch apart for its program and use opposite slot sets; calls on the
same slots must therefore use the same `block`. A word is taken only if its flag is the call's epoch:
a stale one could pass only if its program ran exactly EPOCH_PERIOD calls in between without writing
that slot, which does not happen in practice.
Reference: `pack_words` (what a rank sends) and `reference.all_reduce_in_rank_order` (the sum).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # runs no PTX: sends are plain stores
_TRITON_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
EPOCH_PERIOD = 1 << 30  # even, so the slot set still alternates when the epoch wraps to 1 (and never 0)
MAX_PROGRAMS = 64  # of 4 warps: resident at once on any GPU, so no waiting program holds back a peer's


@triton.jit
def _unpack_sum(acc_lo, acc_hi, words, DTYPE: tl.constexpr):
    """Add one rank's 32-bit words to the float32 sums (two 16-bit values a word, or one 32-bit)."""
    if DTYPE.primitive_bitwidth == 32:
        acc_lo += words.to(tl.float32, bitcast=True)
    else:
        acc_lo += (words & 0xFFFF).to(tl.uint16).to(DTYPE, bitcast=True).to(tl.float32)
        acc_hi += (words >> 16).to(tl.uint16).to(DTYPE, bitcast=True).to(tl.float32)
    return acc_lo, acc_hi


@triton.jit
def _pack(acc_lo, acc_hi, DTYPE: tl.constexpr):
    """The float32 sums rounded to DTYPE (nearest even, as PyTorch rounds), back in 32-bit words."""
    if DTYPE.primitive_bitwidth == 32:
        words = acc_lo.to(tl.uint32, bitcast=True)
    else:
        lo = acc_lo.to(DTYPE).to(tl.uint16, bitcast=True).to(tl.uint32)
        hi = acc_hi.to(DTYPE).to(tl.uint16, bitcast=True).to(tl.uint32)
        words = lo | (hi << 16)
    return words


@triton.jit
def _send(slots, packed, mask, VOLATILE: tl.constexpr):
    """Store words in a peer's slots, volatile as NCCL's LL stores are (so the compiler neither merges
    nor delays them); the interpreter, which runs no PTX, stores them plainly."""
    if VOLATILE:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.volatile.global.b64 [$1], $2; } mov.b32 $0, 0;",
            "=r,l,l,r", [slots, packed, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
        )  # fmt: skip
    else:
        tl.store(slots, packed, mask=mask)


@triton.jit(do_not_specialize=["num_words", "slot_words"])  # one variant per dtype: none compiles mid-serving
def _all_reduce_kernel(
    words_ptr, slots_ptr, peer_slots_ptr, epochs_ptr, num_words, slot_words,
    RANK: tl.constexpr, WORLD: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr,
    PERIOD: tl.constexpr, VOLATILE: tl.constexpr,
):  # fmt: skip
    """`words_ptr`: this rank's data as int32, overwritten by the sum. `slots_ptr`: this rank's receive
    slots, [2 sets, WORLD senders, slot_words] uint64. `peer_slots_ptr`: each rank's slots' address."""
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    epoch = tl.load(epochs_ptr + program) % PERIOD + 1
    tl.store(epochs_ptr + program, epoch)
    epoch = epoch.to(tl.uint64)
    flag = epoch << 32
    slot_set = (epoch % 2).to(tl.int64) * WORLD * slot_words
    for start in range(program * BLOCK, num_words, programs * BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < num_words
        words = tl.load(words_ptr + offsets, mask=mask).to(tl.uint32, bitcast=True)
        packed = words.to(tl.uint64) | flag
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                peer_slots = tl.load(peer_slots_ptr + peer).to(tl.pointer_type(tl.uint64))
                _send(peer_slots + slot_set + RANK * slot_words + offsets, packed, mask, VOLATILE)
    for start in range(program * BLOCK, num_words, programs * BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < num_words
        acc_lo = tl.zeros((BLOCK,), tl.float32)
        acc_hi = tl.zeros((BLOCK,), tl.float32)
        for sender in tl.static_range(WORLD):
            if sender == RANK:
                words = tl.load(words_ptr + offsets, mask=mask).to(tl.uint32, bitcast=True)
            else:
                slot = slots_ptr + slot_set + sender * slot_words + offsets
                received = tl.load(slot, mask=mask, other=flag, volatile=True)
                while tl.sum(((received >> 32) != epoch).to(tl.int32)) > 0:
                    received = tl.load(slot, mask=mask, other=flag, volatile=True)
                words = received.to(tl.uint32)
            acc_lo, acc_hi = _unpack_sum(acc_lo, acc_hi, words, DTYPE)
        tl.store(words_ptr + offsets, _pack(acc_lo, acc_hi, DTYPE).to(tl.int32, bitcast=True), mask=mask)


def pack_words(x: torch.Tensor, epoch: int | torch.Tensor) -> torch.Tensor:
    """What a rank sends for `x` at `epoch` (one, or one per word): each 32-bit word of `x` with the
    epoch in the high half."""
    words = x.view(-1).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return (words | (epoch << 32)).view(torch.uint64)


def all_reduce(
    x: torch.Tensor,
    slots: torch.Tensor,
    peer_slots: torch.Tensor,
    epochs: torch.Tensor,
    rank: int,
    world: int,
    block: int = 1024,
) -> None:
    """Sum contiguous `x` over the ranks in place. `slots`: this rank's receive slots (uint64, 2 ·
    `world` · slot_words); `peer_slots`: int64 addresses of every rank's slots; `epochs`: int32
    [MAX_PROGRAMS], zero at first and then only touched here. Every rank must make the same calls, with
    the same `block` on the same slots."""
    words = x.view(-1).view(torch.int32)
    slot_words = slots.numel() // (2 * world)
    if words.numel() > slot_words:
        raise ValueError(f"{x.numel() * x.element_size()} bytes exceed the slots' {slot_words * 4}")
    programs = min(triton.cdiv(words.numel(), block), MAX_PROGRAMS)
    _all_reduce_kernel[(programs,)](
        words, slots, peer_slots, epochs, words.numel(), slot_words,
        RANK=rank, WORLD=world, DTYPE=_TRITON_DTYPES[x.dtype], BLOCK=block, PERIOD=EPOCH_PERIOD,
        VOLATILE=not _INTERPRETED, num_warps=4,
    )  # fmt: skip
