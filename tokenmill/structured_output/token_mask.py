"""Grammar token masks applied to a batch's logits in place, one launch for all constrained rows.

A constrained row keeps token t only where the grammar's bitmask row allows it, the text-guard row it
names allows it (see text_guards.py), and t is inside the grammar's vocabulary: ids the tokenizer never
produces (a model's padded vocabulary) are always masked. Only the k constrained rows are touched, so a
batch with one grammar request among hundreds of plain ones pays for one row. The engine's kernel
backend picks the implementation: Triton (token_mask_triton.py, imported only then) or the PyTorch
reference below.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (logits, bitmask, targets, guard_index, guards, grammar_vocab), see `apply_token_mask_reference`
TokenMaskOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], None]


def token_mask_op(backend: str) -> TokenMaskOp:
    """The mask kernel of a kernel backend (`Ops.name`): "triton" or "torch"."""
    if backend == "triton":
        from tokenmill.structured_output.token_mask_triton import apply_token_mask_triton

        return apply_token_mask_triton
    return apply_token_mask_reference


def apply_token_mask_reference(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    targets: torch.Tensor,
    guard_index: torch.Tensor,
    guards: torch.Tensor,
    grammar_vocab: int,
) -> None:
    """Set to -inf, in place, every token of `logits[targets[i]]` that row i does not allow (PyTorch:
    each constrained row's words unpacked to one bool per token).

    bitmask: [>= k, words] int32, row i for the i-th constrained row (bit j of word w is token 32w + j);
    targets, guard_index: [k] int32, the logits row and the guard row of each; guards: [4, words] int32;
    grammar_vocab: how many leading token ids the grammar covers (<= words * 32 and <= logits width)."""
    words = bitmask[: targets.numel(), : guards.shape[1]] & guards[guard_index.long()]
    allowed = _bits_of_bytes(words.device)[words.view(torch.uint8).long()].flatten(1)[:, :grammar_vocab]
    rows = targets.long()
    masked = logits[rows]
    masked[:, :grammar_vocab].masked_fill_(~allowed, float("-inf"))
    masked[:, grammar_vocab:] = float("-inf")
    logits.index_copy_(0, rows, masked)


def _bits_of_bytes(device: torch.device) -> torch.Tensor:
    """[256, 8] bool: the bits of each byte value, lowest first (a little-endian word's token order)."""
    values = torch.arange(256, device=device)
    return ((values[:, None] >> torch.arange(8, device=device)) & 1).bool()
