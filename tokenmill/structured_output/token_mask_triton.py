"""The grammar token mask as one Triton launch (reference: `token_mask.apply_token_mask_reference`).

A program covers BLOCK tokens of one constrained row: it reads the row's bitmask words and its guard
row's words for those tokens, and writes -inf where either bit is clear or the token lies past the
grammar's vocabulary. Plain rows of the batch are never read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.structured_output.token_mask import StepMask

BLOCK = 2048


@triton.jit
def _token_mask_kernel(
    logits_ptr,
    bitmask_ptr,
    placement_ptr,
    guards_ptr,
    logits_stride,
    bitmask_stride,
    guards_stride,
    num_rows,
    vocab,
    grammar_vocab,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    tokens = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    target = tl.load(placement_ptr + row).to(tl.int64)  # placement: [2, num_rows]
    guard = tl.load(placement_ptr + num_rows + row)
    covered = tokens < grammar_vocab
    word = tokens // 32
    bits = tl.load(bitmask_ptr + row * bitmask_stride + word, mask=covered, other=0)
    bits &= tl.load(guards_ptr + guard * guards_stride + word, mask=covered, other=0)
    allowed = ((bits >> (tokens % 32)) & 1) != 0
    tl.store(logits_ptr + target * logits_stride + tokens, float("-inf"), mask=(tokens < vocab) & ~allowed)


def apply_token_mask_triton(
    logits: torch.Tensor, mask: StepMask, guards: torch.Tensor, grammar_vocab: int
) -> None:
    bitmask, placement = mask.bitmask, mask.placement
    k, vocab = bitmask.shape[0], logits.shape[-1]
    if k == 0:
        return
    assert logits.stride(-1) == 1 and bitmask.stride(-1) == 1 and placement.is_contiguous()
    _token_mask_kernel[(k, triton.cdiv(vocab, BLOCK))](
        logits,
        bitmask,
        placement,
        guards,
        logits.stride(0),
        bitmask.stride(0),
        guards.stride(0),
        k,
        vocab,
        grammar_vocab,
        BLOCK=BLOCK,
        num_warps=4,
    )
