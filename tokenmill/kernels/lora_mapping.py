"""Which resident LoRA slot each token of a step runs under: the contract between the runner and the
batched LoRA kernels (`Ops.lora_shrink`, `Ops.lora_expand`).

Tokens are grouped by slot, punica/S-LoRA style: `sorted_tokens` lists the batch's token indices ordered
by slot, and slot `s` owns the segment `sorted_tokens[slot_starts[s] : slot_starts[s] + slot_counts[s]]`.
A kernel program takes a tile of one slot's segment, so every tile multiplies by one adapter's matrices.
Tokens without an adapter (slot -1) are in no segment and cost nothing. The tensors are persistent
buffers refilled in place each step, so a captured CUDA graph reads the current step's mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NO_ADAPTER = -1


@dataclass(frozen=True)
class LoRAMapping:
    token_slots: torch.Tensor  # [max_tokens] int32: the slot of each token, NO_ADAPTER for the base model
    sorted_tokens: torch.Tensor  # [max_tokens] int32: token indices grouped by slot
    slot_starts: torch.Tensor  # [num_slots] int32: where each slot's segment starts in sorted_tokens
    slot_counts: torch.Tensor  # [num_slots] int32: how many tokens run under each slot

    @classmethod
    def empty(cls, max_tokens: int, num_slots: int, device: torch.device) -> LoRAMapping:
        """A mapping in which no token has an adapter (what CUDA graphs are captured with)."""

        def zeros(size: int) -> torch.Tensor:
            return torch.zeros(size, dtype=torch.int32, device=device)

        return cls(torch.full((max_tokens,), NO_ADAPTER, dtype=torch.int32, device=device),
                   zeros(max_tokens), zeros(num_slots), zeros(num_slots))  # fmt: skip

    @property
    def num_slots(self) -> int:
        return self.slot_counts.numel()


def segments(token_slots: np.ndarray, num_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host side: (sorted_tokens, slot_starts, slot_counts) of per-token slots, all int32."""
    order = np.argsort(token_slots, kind="stable").astype(np.int32)
    counts = np.bincount(token_slots[token_slots >= 0], minlength=num_slots).astype(np.int32)
    starts = (np.cumsum(counts) - counts + np.count_nonzero(token_slots < 0)).astype(np.int32)
    return order, starts, counts
