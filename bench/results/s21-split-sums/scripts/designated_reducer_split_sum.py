"""The deterministic sum of a split-K GEMV's partial sums, without a fence.

A GEMV that splits each output tile's K range over SPLIT programs must add their fp32 partial sums in
a fixed order, so that a greedy decode reads the same logits whatever the scheduling. Counting the
splits in with an acquire-release atomic costs every program a fence and two round trips to L2 before
it may exit (H200, a Qwen3-8B layer's fp8 GEMVs on the tensor cores: 69.8 µs against 56.0 with
unordered atomics). Here the splits other than the last store their sums as flagged words
(`flagged_words`) and exit at once; the last split of the tile, the highest program id of the tile's
group, polls for them, adds them in split order with its own last, and zeroes the slots for the next
launch. It waits only on programs with lower ids, which the GPU starts no later than it (blocks are
dispatched in index order, as CUTLASS's serial split-K relies on), so the wait always ends; Triton's
interpreter runs programs one by one in that order. Reference: `reference.sum_in_order`.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.flagged_words import store_flagged, wait_flagged

FLAGGED = tl.constexpr(1 << 32)  # a slot holding a split's sum: flag 1 above the fp32 bits
SLOTS = 1 << 20  # one launch's partial sums (8 MB per device, allocated once)


@triton.jit
def hand_over(y, slots, split, stride, mask):
    """A split before the last: store its fp32 sums `y` in its slots (`slots` + split * stride)."""
    store_flagged(slots + split * stride, y.to(tl.uint32, bitcast=True).to(tl.int64) | FLAGGED, mask)


@triton.jit
def collect(y, slots, stride, mask, SPLIT: tl.constexpr):
    """The last split: the sum of the earlier splits' sums in split order, then its own `y`; the slots
    read are zeroed for the next launch. The earlier splits' slots are read at once (one round trip to
    L2); only if some sum has not arrived yet does it wait for each split in turn and add them again."""
    total = tl.zeros(y.shape, tl.float32)
    missing = tl.zeros(y.shape, tl.int1)
    for s in tl.static_range(SPLIT - 1):
        words = tl.load(slots + s * stride, mask=mask, other=FLAGGED, volatile=True)
        missing |= (words >> 32) != (FLAGGED >> 32)
        total += words.to(tl.uint32).to(tl.float32, bitcast=True)
    if tl.sum(missing.to(tl.int32)) > 0:
        total = tl.zeros(y.shape, tl.float32)
        for s in tl.static_range(SPLIT - 1):
            words = wait_flagged(slots + s * stride, mask, FLAGGED)
            total += words.to(tl.uint32).to(tl.float32, bitcast=True)
    for s in tl.static_range(SPLIT - 1):
        tl.store(slots + s * stride, 0, mask=mask)
    return total + y


@functools.cache
def slots(device: torch.device) -> torch.Tensor:
    """The split sums' slots, one set per device, all zero between launches: launches on one stream run
    one after another, and each batch width's first launch runs eagerly, before any CUDA graph is
    captured."""
    return torch.zeros(SLOTS, dtype=torch.int64, device=device)
