"""A GGUF file's header, metadata and tensor table, read in one pass over a memory map.

The `gguf` package's reader builds a numpy view for every part of every metadata value; on a vocabulary of
50k tokens and 49k merges that costs seconds. This reader decodes values straight from the mapped bytes and
checks every count and offset against the file's size, so a damaged file is reported as such (naming it)
instead of failing deep inside with an IndexError or asking for terabytes of memory.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_DEFAULT_ALIGNMENT = 32

# metadata value type -> struct format of one scalar (8 = string and 9 = array are read separately)
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"
}  # fmt: skip
_STRING, _ARRAY = 8, 9
# the smallest encoding of one metadata pair (empty key, a 1-byte value) and of one tensor entry
_MIN_PAIR_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 8 + 4 + 8


class GGUFError(ValueError):
    """The file is not a GGUF file this reader can make sense of."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]  # torch order (outermost first); GGUF stores the innermost dimension first
    ggml_type: GGMLQuantizationType
    offset: int  # from the start of the file
    nbytes: int


class GGUFFile:
    """Metadata and tensor table of `path`; tensor bytes stay in the map until `tensor_bytes` is asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            if not handle.seek(0, 2):
                raise self._error("the file is empty")
            # a private copy-on-write map: torch can wrap it without a copy and without a read-only warning
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        self._pos = 0
        try:
            self.metadata, self.tensors = self._read()
        except (struct.error, UnicodeDecodeError) as exc:
            raise self._error(f"damaged or truncated at byte {self._pos} ({exc})") from exc

    def tensor_bytes(self, entry: TensorEntry) -> memoryview:
        return memoryview(self._map)[entry.offset : entry.offset + entry.nbytes]

    def _error(self, reason: str) -> GGUFError:
        return GGUFError(f"{self.path}: not a readable GGUF file: {reason}")

    def _read(self) -> tuple[dict[str, Any], list[TensorEntry]]:
        if self._map[:4] != _MAGIC:
            raise self._error(f"it starts with {bytes(self._map[:4])!r}, not {_MAGIC!r}")
        self._pos = 4
        version = self._scalar("<I")
        if version not in _VERSIONS:
            raise self._error(f"GGUF version {version} is not supported (supported: {_VERSIONS})")
        tensor_count, pair_count = self._scalar("<Q"), self._scalar("<Q")
        self._check_count(pair_count, _MIN_PAIR_BYTES, "metadata pairs")
        metadata = {}
        for _ in range(pair_count):
            key = self._string()
            metadata[key] = self._value(self._scalar("<I"))
        self._check_count(tensor_count, _MIN_TENSOR_BYTES, "tensors")
        layout = [self._tensor_layout() for _ in range(tensor_count)]
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise self._error(f"general.alignment is {alignment!r}")
        data_start = -(-self._pos // alignment) * alignment
        return metadata, [self._tensor(data_start, *entry) for entry in layout]

    def _tensor_layout(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self._string()
        dims = self._scalar("<I")
        if not 1 <= dims <= _MAX_DIMS:
            raise self._error(f"tensor {name!r} has {dims} dimensions")
        shape = tuple(self._scalar("<Q") for _ in range(dims))
        return name, tuple(reversed(shape)), self._scalar("<I"), self._scalar("<Q")

    def _tensor(
        self, data_start: int, name: str, shape: tuple[int, ...], type_id: int, offset: int
    ) -> TensorEntry:
        try:
            ggml_type = GGMLQuantizationType(type_id)
        except ValueError:
            raise self._error(f"tensor {name!r} has unknown type {type_id}") from None
        block, block_bytes = GGML_QUANT_SIZES[ggml_type]
        elements = 1
        for size in shape:
            elements *= size
        if shape[-1] % block:
            raise self._error(f"tensor {name!r}: row of {shape[-1]} is not a whole number of {block}-blocks")
        nbytes = elements // block * block_bytes
        start = data_start + offset
        if start + nbytes > len(self._map):
            raise self._error(
                f"tensor {name!r} ({nbytes} bytes at {start}) runs past the end of the file "
                f"({len(self._map)} bytes)"
            )
        return TensorEntry(name, shape, ggml_type, start, nbytes)

    def _check_count(self, count: int, min_bytes: int, what: str) -> None:
        if count * min_bytes > len(self._map) - self._pos:
            raise self._error(f"it claims {count} {what}, more than its {len(self._map)} bytes can hold")

    def _scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        length = self._scalar("<Q")
        if length > len(self._map) - self._pos:
            raise self._error(f"a string of {length} bytes at byte {self._pos} runs past the end of the file")
        start, self._pos = self._pos, self._pos + length
        return self._map[start : self._pos].decode("utf-8")

    def _value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self._string()
        if value_type == _ARRAY:
            item_type, count = self._scalar("<I"), self._scalar("<Q")
            if item_type in _SCALARS:
                return self._scalar_array(item_type, count)
            self._check_count(count, 8, "array items")
            return [self._value(item_type) for _ in range(count)]
        if value_type not in _SCALARS:
            raise self._error(f"unknown metadata value type {value_type} at byte {self._pos}")
        return self._scalar(_SCALARS[value_type])

    def _scalar_array(self, item_type: int, count: int) -> list[Any]:
        fmt = _SCALARS[item_type]
        width = struct.calcsize(fmt)
        self._check_count(count, width, "array items")
        values = struct.unpack_from(f"<{count}{fmt[1]}", self._map, self._pos)
        self._pos += count * width
        return list(values)
