"""Tensors of the Open Inference Protocol as Python values, and answers as tensors.

A request carries each input's elements either in its typed `contents` or, as tritonclient sends them,
in `raw_input_contents` (one little-endian buffer per input, a BYTES element being a 4-byte length and
its bytes). Both read the same here; answers are written raw, which every client reads.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from tokenmill.server.errors import APIError

_RAW_DTYPES = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    values: list[Any]  # bytes for BYTES, else Python numbers and bools

    def single(self) -> Any:
        """The one element of a tensor that must hold exactly one (shape [1], [1, 1], ...)."""
        if len(self.values) != 1:
            raise APIError(400, f"input {self.name} must hold one element, not {len(self.values)}", self.name)
        return self.values[0]

    def text(self) -> str:
        """The one element of a BYTES tensor, as UTF-8 text."""
        self.single()
        return self.texts()[0]

    def texts(self) -> list[str]:
        """The elements of a BYTES tensor, as UTF-8 text."""
        if self.datatype != "BYTES":
            raise APIError(400, f"input {self.name} must have datatype BYTES, not {self.datatype}", self.name)
        try:
            return [value.decode("utf-8") for value in self.values]
        except UnicodeDecodeError as exc:
            raise APIError(400, f"input {self.name} is not valid UTF-8 ({exc.reason})", self.name) from None


def input_tensors(request: pb.ModelInferRequest) -> dict[str, Tensor]:
    """Every input of a request by name, its element count checked against its shape."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise APIError(
            400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs", "raw_input_contents"
        )
    tensors: dict[str, Tensor] = {}
    for index, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        if name in tensors:
            raise APIError(400, f"input {name} is given twice", name)
        if datatype not in _RAW_DTYPES and datatype != "BYTES":
            raise APIError(400, f"input {name} has datatype {datatype!r}, which is not supported", name)
        values = _raw_values(raw[index], datatype, name) if raw else _typed_values(tensor, datatype, name)
        expected = math.prod(tensor.shape)
        if len(values) != expected:
            shape = list(tensor.shape)
            raise APIError(
                400, f"input {name} holds {len(values)} elements but its shape {shape} says {expected}", name
            )
        tensors[name] = Tensor(name, datatype, values)
    return tensors


def _raw_values(buffer: bytes, datatype: str, name: str) -> list[Any]:
    if datatype == "BYTES":
        return _split_bytes(buffer, name)
    dtype = np.dtype(_RAW_DTYPES[datatype])
    if len(buffer) % dtype.itemsize:
        raise APIError(
            400, f"input {name}: {len(buffer)} raw bytes are not a whole number of {datatype}", name
        )
    return np.frombuffer(buffer, dtype).tolist()


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor, datatype: str, name: str) -> list[Any]:
    field = _CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise APIError(400, f"input {name}: {datatype} elements can only be sent in raw_input_contents", name)
    return list(getattr(tensor.contents, field))


def _split_bytes(buffer: bytes, name: str) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while offset < len(buffer):
        end = offset + _LENGTH.size
        length = _LENGTH.unpack_from(buffer, offset)[0] if end <= len(buffer) else None
        if length is None or end + length > len(buffer):
            raise APIError(400, f"input {name}: raw BYTES end inside an element", name)
        items.append(buffer[end : end + length])
        offset = end + length
    return items


def bytes_response(
    request: pb.ModelInferRequest, model_name: str, output: str | None, payload: bytes, final: bool | None
) -> pb.ModelInferResponse:
    """An answer holding `payload` as the one element of BYTES output `output` (no output: an empty
    final response); `final` sets Triton's `triton_final_response` parameter of decoupled models."""
    response = pb.ModelInferResponse(model_name=model_name, model_version="1", id=request.id)
    if output is not None:
        response.outputs.add(name=output, datatype="BYTES", shape=[1])
        response.raw_output_contents.append(_LENGTH.pack(len(payload)) + payload)
    if final is not None:
        response.parameters["triton_final_response"].bool_param = final
    return response


def parameter_values(parameters: Any) -> dict[str, Any]:
    """A request's `parameters` map as plain values."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values
