"""Applying per-row token bitmasks to a batch's logits on their device, in one vectorised step.

xgrammar fills a bitmask of int32 words per row on the host (bit j of word i allows token 32*i + j);
here the rows that carry a grammar are unpacked to booleans on the logits' device and every token they
do not allow is set to -inf. Pure torch, so it runs the same on CPU, Hopper and sm_120.
"""

from __future__ import annotations

import torch

_BITS: dict[torch.device, torch.Tensor] = {}


def _bit_positions(device: torch.device) -> torch.Tensor:
    if device not in _BITS:
        _BITS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return _BITS[device]


def allowed_tokens(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[rows, words] int32 -> [rows, vocab_size] bool. Unpacked by bytes (words are little-endian on every
    platform torch runs on, so byte k holds tokens 8k..8k+7): the intermediate is one byte per token."""
    as_bytes = bitmask.view(torch.uint8)
    bits = (as_bytes.unsqueeze(-1) >> _bit_positions(bitmask.device)) & 1
    return bits.view(bitmask.shape[0], -1)[:, :vocab_size].bool()


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Mask, in place, row `rows[i]` of `logits` with row i of the host `bitmask` (len(rows) rows)."""
    device = logits.device
    index = torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True)
    allowed = allowed_tokens(bitmask[: len(rows)].to(device, non_blocking=True), logits.shape[-1])
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
