"""The grammar token mask as one Triton launch (reference: `token_mask.apply_token_mask_reference`).

A program covers BLOCK tokens of one constrained row: it reads the row's bitmask words and its guard
row's words for those tokens, and writes -inf where either bit is clear or the token lies past the
grammar's vocabulary. Plain rows of the batch are never read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _token_mask_kernel(
    logits_ptr,
    bitmask_ptr,
    targets_ptr,
    guard_index_ptr,
    guards_ptr,
    logits_stride,
    bitmask_stride,
    guards_stride,
    vocab,
    grammar_vocab,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    tokens = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    target = tl.load(targets_ptr + row).to(tl.int64)
    guard = tl.load(guard_index_ptr + row)
    covered = tokens < grammar_vocab
    word = tokens // 32
    bits = tl.load(bitmask_ptr + row * bitmask_stride + word, mask=covered, other=0)
    bits &= tl.load(guards_ptr + guard * guards_stride + word, mask=covered, other=0)
    allowed = ((bits >> (tokens % 32)) & 1) != 0
    tl.store(logits_ptr + target * logits_stride + tokens, float("-inf"), mask=(tokens < vocab) & ~allowed)


def apply_token_mask_triton(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    targets: torch.Tensor,
    guard_index: torch.Tensor,
    guards: torch.Tensor,
    grammar_vocab: int,
) -> None:
    k, vocab = targets.numel(), logits.shape[-1]
    if k == 0:
        return
    assert logits.stride(-1) == 1 and bitmask.stride(-1) == 1 and guards.stride(-1) == 1
    _token_mask_kernel[(k, triton.cdiv(vocab, BLOCK))](
        logits,
        bitmask,
        targets,
        guard_index,
        guards,
        logits.stride(0),
        bitmask.stride(0),
        guards.stride(0),
        vocab,
        grammar_vocab,
        BLOCK=BLOCK,
        num_warps=4,
    )
