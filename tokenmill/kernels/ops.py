"""The kernel backend as one object: the models and the runner call `ops.<kernel>(...)`, and which
implementation runs is decided once, at load, by `select_ops`.

The Triton package is imported here lazily, so `import tokenmill` works where Triton is missing (CPU-only
torch, macOS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from tokenmill.kernels import reference
from tokenmill.kernels.metadata import AttentionMetadata

logger = logging.getLogger(__name__)

KernelChoice = Literal["auto", "triton", "torch"]


class RMSNormOp(Protocol):
    def __call__(
        self, x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RMSNorm of x ([rows, dim]); with `residual`, of x + residual, returned as the second value."""


class NormRopeAndCacheOp(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        cos_table: torch.Tensor,
        sin_table: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
        qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
        kv_scales: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Optional per-head q/k RMSNorm, rotary embedding, and the k/v cache write; returns rotated q."""


class PagedAttentionOp(Protocol):
    def __call__(
        self, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        """Causal attention of a step's new tokens ([tokens, heads, head_dim]) over the paged cache."""


class WarmUpOp(Protocol):
    def __call__(
        self,
        kv_cache: torch.Tensor,
        num_heads: int,
        dtype: torch.dtype,
        null_block: int,
        kv_scales: torch.Tensor | None,
    ) -> None:
        """Prepare everything that would otherwise happen during the first steps (kernel compilation)."""


@dataclass(frozen=True)
class Ops:
    """One backend's kernels. `decode_splits(num_seqs, num_kv_heads, max_len, num_sms)` is the value
    for `AttentionMetadata.decode_splits`."""

    name: Literal["torch", "triton"]
    supports_cuda_graphs: bool  # its kernels can be captured (the reference reads host-side lists)
    rms_norm: RMSNormOp
    silu_and_mul: Callable[[torch.Tensor], torch.Tensor]
    norm_rope_and_cache: NormRopeAndCacheOp
    paged_attention: PagedAttentionOp
    decode_splits: Callable[[int, int, int, int], int]
    warm_up: WarmUpOp


def _one_split(num_seqs: int, num_kv_heads: int, max_len: int, num_sms: int) -> int:
    return 1


def _nothing_to_warm_up(
    kv_cache: torch.Tensor,
    num_heads: int,
    dtype: torch.dtype,
    null_block: int,
    kv_scales: torch.Tensor | None,
) -> None:
    return None


TORCH_OPS = Ops(
    name="torch",
    supports_cuda_graphs=False,
    rms_norm=reference.rms_norm,
    silu_and_mul=reference.silu_and_mul,
    norm_rope_and_cache=reference.norm_rope_and_cache,
    paged_attention=reference.paged_attention,
    decode_splits=_one_split,
    warm_up=_nothing_to_warm_up,
)


def triton_ops(device: torch.device) -> Ops:
    """The Triton backend; raises ImportError when the triton package cannot be imported."""
    from tokenmill.kernels.triton import activation, attention, norm, rope

    return Ops(
        name="triton",
        supports_cuda_graphs=device.type == "cuda",
        rms_norm=norm.rms_norm,
        silu_and_mul=activation.silu_and_mul,
        norm_rope_and_cache=rope.norm_rope_and_cache,
        paged_attention=attention.paged_attention,
        decode_splits=attention.decode_splits,
        warm_up=attention.compile_variants,
    )


def select_ops(kernels: KernelChoice, device: torch.device) -> Ops:
    """`torch`: the references. `triton`: the Triton kernels, which need the triton package and a CUDA
    device (or, for tests, Triton's CPU interpreter: TRITON_INTERPRET=1). `auto`: Triton on CUDA when it
    imports, else the references."""
    if kernels == "torch" or (kernels == "auto" and device.type != "cuda"):
        return TORCH_OPS
    try:
        ops = triton_ops(device)
    except ImportError as exc:
        if kernels == "triton":
            raise ValueError(
                f"kernels='triton' needs the triton package, which cannot be imported ({exc}); "
                "install triton or use kernels='torch'"
            ) from exc
        logger.warning("triton cannot be imported (%s): using the PyTorch reference kernels", exc)
        return TORCH_OPS
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"kernels='triton' needs a CUDA device, not {device.type}; use kernels='torch'")
    return ops
