"""GGUF reading: the vectorised dequantizer equals the `gguf` package's reference bit for bit, and damaged
files are reported by name instead of crashing the loader."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize as reference_dequantize
from gguf.quants import quantize

from tokenmill.models.gguf_dequant import dequantize
from tokenmill.models.gguf_reader import GGUFError, GGUFFile
from tokenmill.models.loader import default_model_path, load_model

Q = GGMLQuantizationType
TYPES = [Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.F16, Q.BF16, Q.F32]


def _assert_bit_identical(raw: np.ndarray, ggml_type: GGMLQuantizationType, shape: tuple[int, ...]) -> None:
    expected = np.asarray(reference_dequantize(raw, ggml_type), dtype=np.float32).reshape(shape)
    got = dequantize(memoryview(raw.tobytes()), ggml_type, shape)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    got = got.numpy()
    # NaN where the reference has NaN (random scales can be NaN; its payload bits are not specified), and
    # the same bits everywhere else, signed zeros included
    assert np.array_equal(np.isnan(got), np.isnan(expected)), ggml_type.name
    numbers = ~np.isnan(expected)
    assert np.array_equal(got[numbers].view(np.uint32), expected[numbers].view(np.uint32)), ggml_type.name


@pytest.mark.parametrize("ggml_type", TYPES, ids=lambda t: t.name)
def test_random_blocks_match_the_reference(ggml_type: GGMLQuantizationType) -> None:
    rng = np.random.default_rng(int(ggml_type))
    block, block_bytes = GGML_QUANT_SIZES[ggml_type]
    rows, blocks_per_row = 7, 5
    shape = (rows, blocks_per_row * block)
    random_bytes = rng.integers(0, 256, rows * blocks_per_row * block_bytes, dtype=np.uint8)
    _assert_bit_identical(random_bytes, ggml_type, shape)  # any bit pattern, NaN/inf scales included
    if ggml_type in (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.F16, Q.BF16):
        weights = rng.normal(0, 0.05, shape).astype(np.float32)
        _assert_bit_identical(quantize(weights, ggml_type).reshape(-1), ggml_type, shape)


def test_blocks_of_the_shipped_model_match_the_reference() -> None:
    """Every quant type the embedded model uses, on its real tensors (the first rows of a few of each type)."""
    seen: dict[GGMLQuantizationType, int] = {}
    checkpoint = GGUFFile(default_model_path())
    for entry in checkpoint.tensors:
        if seen.get(entry.ggml_type, 0) < 3:
            seen[entry.ggml_type] = seen.get(entry.ggml_type, 0) + 1
            shape = entry.shape if len(entry.shape) == 1 else (min(entry.shape[0], 256), *entry.shape[1:])
            nbytes = entry.nbytes * math.prod(shape) // math.prod(entry.shape)
            raw = np.frombuffer(checkpoint.tensor_bytes(entry), dtype=np.uint8)[:nbytes]
            _assert_bit_identical(raw, entry.ggml_type, shape)
    assert set(seen) == {Q.Q4_1, Q.Q8_0, Q.F32}


@pytest.mark.slow
def test_metadata_and_tensor_table_match_the_gguf_package() -> None:
    path = default_model_path()
    reference = GGUFReader(path)
    ours = GGUFFile(path)
    assert set(ours.metadata) == {key for key in reference.fields if not key.startswith("GGUF.")}
    for key, field in reference.fields.items():
        if not key.startswith("GGUF."):
            assert ours.metadata[key] == field.contents(), key
    assert len(ours.tensors) == len(reference.tensors)
    for entry, tensor in zip(ours.tensors, reference.tensors, strict=True):
        assert (entry.name, entry.ggml_type) == (tensor.name, tensor.tensor_type)
        assert entry.shape == tuple(reversed(tensor.shape.tolist()))
        assert bytes(ours.tensor_bytes(entry)) == np.asarray(tensor.data).tobytes(), entry.name


def _gguf_header(tensor_count: int, pair_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, pair_count)


@pytest.mark.parametrize(
    "content, reason",
    [
        (_gguf_header(10**12, 0), "claims 1000000000000 tensors"),
        (_gguf_header(0, 10**12), "claims 1000000000000 metadata pairs"),
        (_gguf_header(0, 1) + struct.pack("<Q", 10**15) + bytes(32), "runs past the end"),
        (_gguf_header(0, 1) + struct.pack("<Q", 30) + bytes(16), "runs past the end"),
        (_gguf_header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 4), "truncated"),
        (b"GGUF\x03", "truncated"),
        (_gguf_header(0, 0), "no 'general.architecture'"),
        (b"PK\x03\x04 not a gguf at all", "not b'GGUF'"),
        (b"", "empty"),
    ],
    ids=[
        "tensor-count",
        "pair-count",
        "key-length",
        "short-key",
        "short-value",
        "short-header",
        "no-metadata",
        "magic",
        "empty",
    ],
)
def test_damaged_gguf_names_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError, match=reason) as caught:
        load_model(str(path), torch.device("cpu"), torch.float32, None)
    assert str(path) in str(caught.value)


def test_truncated_copy_of_the_shipped_model_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(default_model_path().read_bytes()[: 40 << 20])
    with pytest.raises(GGUFError, match="runs past the end of the file") as caught:
        load_model(str(path), torch.device("cpu"), torch.float32, None)
    assert str(path) in str(caught.value)


def test_broken_config_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], ')
    with pytest.raises(ValueError, match="not valid JSON") as caught:
        load_model(str(tmp_path), torch.device("cpu"), torch.float32, None)
    assert str(caught.value).startswith(f"{tmp_path / 'config.json'}: not valid JSON (")
    assert "line 1" in str(caught.value)  # where the JSON breaks


def test_config_json_missing_a_field_names_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="num_attention_heads") as caught:
        load_model(str(tmp_path), torch.device("cpu"), torch.float32, None)
    assert str(tmp_path / "config.json") in str(caught.value)
