"""GGUF tensor bytes -> float32 tensors, a whole tensor at a time.

The formats the small models ship in (Q4_0, Q4_1, Q8_0, F16, BF16, F32) are decoded here with the same
float32 operations, in the same order, as the `gguf` package's reference (`gguf.quants.dequantize`), so the
weights are bit-identical to it; other formats fall back to that reference. NumPy rather than torch: each
step is one memory-bound pass, and on a small shared CPU torch's intra-op threads spend more time waiting
for each other at the ~2,500 per-op barriers of a model load than they save.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as reference_dequantize

Q = GGMLQuantizationType


def dequantize(raw: memoryview, ggml_type: GGMLQuantizationType, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 tensor of `shape` stored in `raw` (the tensor's bytes, as laid out in the file)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    decode = _DECODERS.get(ggml_type)
    if decode is None:
        return torch.from_numpy(np.asarray(reference_dequantize(data, ggml_type), dtype=np.float32)).reshape(
            shape
        )
    block_elements, block_bytes = GGML_QUANT_SIZES[ggml_type]
    flat = decode(data.reshape(-1, block_bytes)) if block_elements > 1 else decode(data)
    return torch.from_numpy(flat).reshape(shape)


def _scale(blocks: np.ndarray, start: int = 0) -> np.ndarray:
    """The float16 field at byte `start` of each block, as a float32 column."""
    return np.ascontiguousarray(blocks[:, start : start + 2]).view(np.float16).astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """Each block's 4-bit values as float32: the low nibbles of its bytes first, then the high ones."""
    values = np.empty((packed.shape[0], 2, packed.shape[1]), dtype=np.float32)
    np.bitwise_and(packed, 0x0F, out=values[:, 0], casting="unsafe")
    np.right_shift(packed, 4, out=values[:, 1], casting="unsafe")
    return values.reshape(packed.shape[0], -1)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    values = _nibbles(blocks[:, 2:])
    values -= 8
    values *= _scale(blocks)
    return values.reshape(-1)


def _q4_1(blocks: np.ndarray) -> np.ndarray:
    values = _nibbles(blocks[:, 4:])
    values *= _scale(blocks)
    values += _scale(blocks, 2)
    return values.reshape(-1)


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)
    values *= _scale(blocks)
    return values.reshape(-1)


_DECODERS = {
    Q.F32: lambda data: data.view(np.float32).copy(),  # a copy: the result never aliases the file map
    Q.F16: lambda data: data.view(np.float16).astype(np.float32),
    Q.BF16: lambda data: (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32),
    Q.Q4_0: _q4_0,
    Q.Q4_1: _q4_1,
    Q.Q8_0: _q8_0,
}
