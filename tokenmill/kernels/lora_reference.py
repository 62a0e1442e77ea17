"""The PyTorch reference of the batched LoRA kernels: each token's adapter slot picks its A and B, shrink
(x·Aᵀ) and expand (·Bᵀ added to the output) as the Triton kernels split them, and the whole delta the
fused small-batch GEMVs add. The `torch` backend runs these; `reference.py` folds them into its linears.
"""

from __future__ import annotations

import itertools

import torch

from tokenmill.kernels.lora_mapping import LoRAExpand, LoRAMapping, LoRAWeights


def lora_shrink(
    x: torch.Tensor, lora_a: torch.Tensor, ranks: torch.Tensor, mapping: LoRAMapping
) -> torch.Tensor:
    """h = x·Aᵀ under each token's slot: x [tokens, in], lora_a [slots, shards, rank, in] ->
    h [parts, tokens, 1, shards, rank] float32, partial sums over parts of `in` that `lora_expand` adds
    up (here one part; zeros for tokens without an adapter). One matmul per slot present; `ranks` (each
    slot's rank per shard) only lets the kernels skip the zero padding, which adds nothing here."""
    return _shrink_by_slot(x, lora_a, mapping.token_slots[: x.shape[0]])


def lora_expand(
    y: torch.Tensor,
    h: torch.Tensor,
    lora_b: torch.Tensor,
    ranks: torch.Tensor,
    out_shards: tuple[int, ...],
    mapping: LoRAMapping,
) -> None:
    """y[:, shard s] += (Σ_parts h[:, :, σ, s])·B[:, shard s]ᵀ under each token's slot, in place: y
    [tokens, out], h [parts, tokens, slots or 1, shards, rank] (σ: the token's slot where h holds every
    slot's x·Aᵀ, else 0), lora_b [slots, out, rank] (the adapter's scale folded in), out_shards the fused
    shards' widths."""
    _expand_by_slot(y, h, lora_b, out_shards, mapping.token_slots[: y.shape[0]])


def expanded(y: torch.Tensor, lora: LoRAExpand) -> torch.Tensor:
    """y with a pending expand added (a copy: y may be a view of the stacked GEMM's output)."""
    y = y.clone()
    lora.add_to(y, lora_expand)
    return y


def lora_delta(out: torch.Tensor, x: torch.Tensor, lora: LoRAWeights) -> None:
    """out += B·A·x under each row's slot, in place (NO_ADAPTER rows untouched), rounded as the batched
    kernels round: A·x to the activation dtype, then B·(A·x) to it before the add. The delta the fused
    small-batch GEMVs add to their projection's output, before any residual."""
    token_slots = lora.token_slots[: x.shape[0]]
    _expand_by_slot(out, _shrink_by_slot(x, lora.a, token_slots), lora.b, lora.out_shards, token_slots)


def _shrink_by_slot(x: torch.Tensor, lora_a: torch.Tensor, token_slots: torch.Tensor) -> torch.Tensor:
    num_tokens, (_, shards, rank, _) = x.shape[0], lora_a.shape
    slots = token_slots.long()
    h = torch.zeros(1, num_tokens, 1, shards, rank, dtype=torch.float32, device=x.device)
    for slot in slots.unique().tolist():
        if slot >= 0:
            rows = (slots == slot).nonzero()[:, 0]
            h[0, rows, 0] = (x[rows] @ lora_a[slot].flatten(0, 1).T).unflatten(1, (shards, rank)).float()
    return h


def _expand_by_slot(
    y: torch.Tensor,
    h: torch.Tensor,
    lora_b: torch.Tensor,
    out_shards: tuple[int, ...],
    token_slots: torch.Tensor,
) -> None:
    slots = token_slots.long()
    bounds = [0, *itertools.accumulate(out_shards)]
    summed = h.sum(0).to(lora_b.dtype)
    for slot in slots.unique().tolist():
        if slot >= 0:
            rows = (slots == slot).nonzero()[:, 0]
            own = summed[rows, slot if summed.shape[1] > 1 else 0]
            for shard, (begin, end) in enumerate(itertools.pairwise(bounds)):
                y[rows, begin:end] += own[:, shard] @ lora_b[slot, begin:end].T
