"""The gRPC layer without a server: tensors in both encodings, and the optional dependency."""

from __future__ import annotations

import importlib
import struct
import subprocess
import sys

import pytest
from tritonclient.grpc import service_pb2 as pb

from tokenmill.server.errors import APIError
from tokenmill.server.grpc.tensors import bytes_response, input_tensors


def request_with(
    *tensors: tuple[str, str, list[int]], raw: list[bytes] | None = None
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw or [])
    return request


def raw_bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_raw_and_typed_contents_read_the_same() -> None:
    raw = request_with(
        ("IN", "BYTES", [1]), ("max_tokens", "INT32", [1, 1]), raw=[raw_bytes(b"{}"), struct.pack("<i", 7)]
    )
    typed = request_with(("IN", "BYTES", [1]), ("max_tokens", "INT32", [1, 1]))
    typed.inputs[0].contents.bytes_contents.append(b"{}")
    typed.inputs[1].contents.int_contents.append(7)
    for request in (raw, typed):
        tensors = input_tensors(request)
        assert tensors["IN"].text() == "{}" and tensors["max_tokens"].single() == 7


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (request_with(("IN", "BYTES", [1]), raw=[struct.pack("<I", 9) + b"abc"]), "end inside an element"),
        (request_with(("IN", "BYTES", [2]), raw=[raw_bytes(b"a")]), "shape [2] says 2"),
        (request_with(("IN", "BYTES", [1]), ("IN", "BYTES", [1]), raw=[raw_bytes(b"a")] * 2), "given twice"),
        (
            request_with(("IN", "BYTES", [1]), ("x", "BYTES", [1]), raw=[raw_bytes(b"a")]),
            "1 raw_input_contents",
        ),
        (request_with(("x", "FP32", [1]), raw=[b"\x00\x00"]), "not a whole number of FP32"),
        (request_with(("x", "COMPLEX", [1]), raw=[b""]), "'COMPLEX', which is not supported"),
    ],
)
def test_malformed_tensors_are_400s_naming_the_input(request_: pb.ModelInferRequest, words: str) -> None:
    with pytest.raises(APIError) as refused:
        input_tensors(request_)
    assert refused.value.status == 400 and words in refused.value.message


def test_text_needs_one_utf8_bytes_element() -> None:
    tensors = input_tensors(
        request_with(
            ("a", "BYTES", [2]), ("b", "BYTES", [1]), raw=[raw_bytes(b"x", b"y"), raw_bytes(b"\xff")]
        )
    )
    with pytest.raises(APIError, match="one element, not 2"):
        tensors["a"].text()
    with pytest.raises(APIError, match="not valid UTF-8"):
        tensors["b"].text()


def test_answers_are_raw_bytes_with_the_final_flag() -> None:
    request = pb.ModelInferRequest(id="r7")
    response = bytes_response(request, "m", "OUT", "é".encode(), final=True)
    assert (
        response.id == "r7" and response.outputs[0].name == "OUT" and list(response.outputs[0].shape) == [1]
    )
    assert response.raw_output_contents[0] == raw_bytes("é".encode())
    assert response.parameters["triton_final_response"].bool_param
    assert not bytes_response(request, "m", None, b"", final=True).outputs


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc_reflection", None)
    monkeypatch.delitem(sys.modules, "tokenmill.server.grpc", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'tokenmill\[grpc\]'"):
        importlib.import_module("tokenmill.server.grpc")


@pytest.mark.slow  # a fresh interpreter importing torch
def test_http_alone_never_imports_grpc() -> None:
    code = (
        "import sys, tokenmill.cli, tokenmill.server.launcher;"
        "from tokenmill.server.app import create_app; create_app();"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'tritonclient'));"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
