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
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepMask:
    """A step's grammar masks: bitmask row i (int32 words over the grammar's vocabulary, bit j of word w
    for token 32w + j) belongs to logits row placement[0, i] and is ANDed with guard row placement[1, i]."""

    bitmask: torch.Tensor  # [k, words]
    placement: torch.Tensor  # [2, k] int32

    def to(self, device: torch.device) -> StepMask:
        """On `device`; from pinned host memory the copies are asynchronous."""
        return StepMask(
            self.bitmask.to(device, non_blocking=True), self.placement.to(device, non_blocking=True)
        )


# (logits, mask on the logits' device, guard rows [4, words] int32, grammar vocabulary size) -> None
TokenMaskOp = Callable[[torch.Tensor, StepMask, torch.Tensor, int], None]


def token_mask_op(backend: str) -> TokenMaskOp:
    """The mask kernel of a kernel backend (`Ops.name`): "triton" or "torch"."""
    if backend == "triton":
        from tokenmill.structured_output.token_mask_triton import apply_token_mask_triton

        return apply_token_mask_triton
    return apply_token_mask_reference


def apply_token_mask_reference(
    logits: torch.Tensor, mask: StepMask, guards: torch.Tensor, grammar_vocab: int
) -> None:
    """Set to -inf, in place, every token of each constrained logits row that its bitmask row, its guard
    row or the grammar's vocabulary (the first `grammar_vocab` ids) rules out. PyTorch: each row's words
    are unpacked to one bool per token."""
    targets, guard_index = mask.placement.long()
    words = mask.bitmask[:, : guards.shape[1]] & guards[guard_index]
    allowed = _bits_of_bytes(words.device)[words.view(torch.uint8).long()].flatten(1)[:, :grammar_vocab]
    masked = logits[targets]
    masked[:, :grammar_vocab].masked_fill_(~allowed, float("-inf"))
    masked[:, grammar_vocab:] = float("-inf")
    logits.index_copy_(0, targets, masked)


def _bits_of_bytes(device: torch.device) -> torch.Tensor:
    """[256, 8] bool: the bits of each byte value, lowest first (a little-endian word's token order)."""
    values = torch.arange(256, device=device)
    return ((values[:, None] >> torch.arange(8, device=device)) & 1).bool()
