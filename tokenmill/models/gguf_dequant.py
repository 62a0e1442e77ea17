"""GGUF tensor bytes -> float32 tensors, whole tensors at a time in PyTorch.

The formats the small models ship in (Q4_0, Q4_1, Q8_0, F16, BF16, F32) are decoded here with the same
float32 operations, in the same order, as the `gguf` package's reference (`gguf.quants.dequantize`), so the
weights are bit-identical to it; other formats fall back to that reference.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as reference_dequantize

Q = GGMLQuantizationType


def dequantize(raw: memoryview, ggml_type: GGMLQuantizationType, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 tensor of `shape` stored in `raw` (the tensor's bytes, as laid out in the file)."""
    if raw.readonly:  # torch wraps only writable buffers without a warning; the loader's map is writable
        raw = memoryview(bytearray(raw))
    data = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
    decode = _DECODERS.get(ggml_type)
    if decode is None:
        array = np.frombuffer(raw, dtype=np.uint8)
        flat = torch.from_numpy(np.array(reference_dequantize(array, ggml_type), dtype=np.float32))
    else:
        block_elements, block_bytes = GGML_QUANT_SIZES[ggml_type]
        flat = decode(data.view(-1, block_bytes)) if block_elements > 1 else decode(data)
    return flat.reshape(shape)


def _scale(blocks: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The float16 field at byte `start` of each block, as a float32 column."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Each block's 4-bit values as float32: the low nibbles of its bytes first, then the high ones."""
    return torch.cat((packed & 0x0F, packed >> 4), dim=1).float()


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    return _nibbles(blocks[:, 2:]).sub_(8).mul_(_scale(blocks)).flatten()


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    return _nibbles(blocks[:, 4:]).mul_(_scale(blocks)).add_(_scale(blocks, 2)).flatten()


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    values = blocks[:, 2:].contiguous().view(torch.int8).float()
    return values.mul_(_scale(blocks)).flatten()


_DECODERS = {
    Q.F32: lambda data: data.view(torch.float32),
    Q.F16: lambda data: data.view(torch.float16).float(),
    Q.BF16: lambda data: data.view(torch.bfloat16).float(),
    Q.Q4_0: _q4_0,
    Q.Q4_1: _q4_1,
    Q.Q8_0: _q8_0,
}
