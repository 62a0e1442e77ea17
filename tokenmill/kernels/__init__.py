"""Compute kernels. Each Triton kernel has a pure-PyTorch reference beside it; tests hold them equal."""

from __future__ import annotations

import importlib.util

import torch

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_usable(device: torch.device) -> bool:
    """Triton kernels run on CUDA devices (and on CPU only under TRITON_INTERPRET=1, for tests)."""
    return TRITON_AVAILABLE and device.type == "cuda"
