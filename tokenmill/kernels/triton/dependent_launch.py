"""Programmatic dependent launch (PDL, Hopper and later): a kernel launched with it may start while the
kernel before it in the stream (or CUDA graph) is still running, and waits (`gdc_wait`) only where it
first reads that kernel's outputs. At one token per step a decode step is ~170 kernels of a few
microseconds each; each GEMV can fetch its first weight tile, which no earlier kernel writes, under
the previous kernel's tail instead of after it.

Every kernel launched this way must execute `gdc_wait` before it finishes (the skinny GEMVs do, in every
program): the next kernel's wait then covers all earlier kernels too."""

from __future__ import annotations

import functools

import torch


@functools.cache
def supports_dependent_launch(device: torch.device) -> bool:
    """Whether `device` has grid dependency control (sm_90 and later)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def dependent_launch(device: torch.device, requested: bool) -> bool:
    return requested and supports_dependent_launch(device)
