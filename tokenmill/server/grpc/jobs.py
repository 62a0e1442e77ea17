"""What an inference request over gRPC asks for, in either of the two conventions the model accepts.

- FastDeploy's (seed 003 behind Triton): a JSON request in the BYTES input `IN`, with the fields the
  HTTP FastDeploy path accepts; each answer is a JSON line in `OUT`, and errors met once the request
  is understood are answered in-band (`error_code`, `error_msg`, `is_end`), as FastDeploy clients read.
- Triton's LLM convention: the prompt in `text_input`, sampling settings as request parameters, as
  vLLM's `sampling_parameters` JSON, or as one-element input tensors (TensorRT-LLM's way); answers
  in `text_output`.

Both are validated by the HTTP side's own request models and prepared by its own code, so a request
means the same, and is refused for the same reasons, whichever protocol carries it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from tritonclient.grpc import service_pb2 as pb

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.server import fastdeploy
from tokenmill.server.errors import APIError, validation_message
from tokenmill.server.fastdeploy_judge_requests import FastDeployRequest
from tokenmill.server.grpc.tensors import Tensor, input_tensors, parameter_values
from tokenmill.server.json_body import parse_json
from tokenmill.server.openai_api import prepare_completion
from tokenmill.server.openai_requests import CompletionRequest
from tokenmill.server.state import ServerState

MODEL_VERSION = "1"
FASTDEPLOY_INPUT, FASTDEPLOY_OUTPUT = "IN", "OUT"
TEXT_INPUT, TEXT_OUTPUT = "text_input", "text_output"
# Settings a text_input request may carry, with the datatype its input tensor has in the metadata.
TEXT_SETTINGS = {
    "max_tokens": "INT32",
    "min_tokens": "INT32",
    "temperature": "FP32",
    "top_p": "FP32",
    "top_k": "INT32",
    "min_p": "FP32",
    "repetition_penalty": "FP32",
    "presence_penalty": "FP32",
    "frequency_penalty": "FP32",
    "seed": "INT64",
    "ignore_eos": "BOOL",
    "stop": "BYTES",
    "stream": "BOOL",
}

Body = TypeVar("Body", bound=BaseModel)


class Job(ABC):
    """One understood request: how to prepare it, and how its answers are spelled."""

    output: str
    stream: bool
    timeout: float | None = None
    request_id: str | None = None  # the engine's id; None: a fresh one
    lora: str | None = None  # the LoRA adapter the request's model name picks; None: the base model

    @abstractmethod
    async def prepare(self, state: ServerState) -> tuple[list[int], SamplingParams]:
        """The prompt and sampling parameters, checked against the server's limits."""

    @abstractmethod
    def piece(self, output: RequestOutput, completion: CompletionOutput) -> bytes:
        """A streamed answer: the new text."""

    @abstractmethod
    def whole(self, output: RequestOutput) -> bytes:
        """The answer of a request that does not stream."""

    def failure(self, exc: APIError) -> bytes | None:
        """The in-band answer to an error, or None to answer it with the protocol's error."""
        return None


class FastDeployJob(Job):
    output = FASTDEPLOY_OUTPUT

    def __init__(self, body: FastDeployRequest) -> None:
        self.body = body
        self.dialect = fastdeploy.FastDeployDialect.of(body)
        self.stream = body.stream
        self.timeout = body.timeout
        self.request_id = fastdeploy.engine_request_id(self.dialect.req_id)

    async def prepare(self, state: ServerState) -> tuple[list[int], SamplingParams]:
        return await fastdeploy.prepare(self.body, state)

    def piece(self, output: RequestOutput, completion: CompletionOutput) -> bytes:
        (message,) = self.dialect.update(0, output, completion)
        return message.model_dump_json().encode()

    def whole(self, output: RequestOutput) -> bytes:
        return self.dialect.whole([output]).model_dump_json().encode()

    def failure(self, exc: APIError) -> bytes:
        return self.dialect.error(exc, send_idx=self.dialect.send_idx).model_dump_json().encode()


class TextJob(Job):
    output = TEXT_OUTPUT

    def __init__(self, body: CompletionRequest) -> None:
        self.body = body
        self.stream = body.stream

    async def prepare(self, state: ServerState) -> tuple[list[int], SamplingParams]:
        prompts, params = await prepare_completion(self.body, state)
        return prompts[0], params

    def piece(self, output: RequestOutput, completion: CompletionOutput) -> bytes:
        return completion.delta_text.encode()

    def whole(self, output: RequestOutput) -> bytes:
        return output.outputs[0].text.encode()


def parse_request(request: pb.ModelInferRequest, state: ServerState) -> Job:
    """The job a request describes, or a 400/404 naming what is wrong with it."""
    lora = check_model(request.model_name, request.model_version, state)
    tensors = input_tensors(request)
    if FASTDEPLOY_INPUT in tensors:
        job: Job = _fastdeploy_job(tensors)
    elif TEXT_INPUT in tensors:
        job = _text_job(tensors, parameter_values(request.parameters))
    else:
        raise APIError(
            400, f"the request needs the input {FASTDEPLOY_INPUT} (FastDeploy JSON) or {TEXT_INPUT}", "inputs"
        )
    for requested in request.outputs:
        if requested.name != job.output:
            message = f"output {requested.name} is not produced for this request; it answers in {job.output}"
            raise APIError(400, message, requested.name)
    job.lora = lora
    return job


def check_model(name: str, version: str, state: ServerState) -> str | None:
    """The LoRA adapter `name` picks (None: the base model), or a 404."""
    lora = state.check_model(name)
    if version not in ("", MODEL_VERSION):
        raise APIError(404, f"model {name!r} has no version {version!r}; version {MODEL_VERSION} is served")
    return lora


def _fastdeploy_job(tensors: dict[str, Tensor]) -> FastDeployJob:
    for name in tensors.keys() - {FASTDEPLOY_INPUT}:
        raise APIError(
            400, f"input {name} is not accepted beside {FASTDEPLOY_INPUT}, whose JSON says it all", name
        )
    fields = _json_object(tensors[FASTDEPLOY_INPUT].text(), FASTDEPLOY_INPUT)
    return FastDeployJob(_validated(FastDeployRequest, fields, f"{FASTDEPLOY_INPUT}."))


def _text_job(tensors: dict[str, Tensor], parameters: dict[str, Any]) -> TextJob:
    fields = {key: value for key, value in parameters.items() if key in TEXT_SETTINGS}
    if "sampling_parameters" in parameters:  # vLLM's Triton backend: one JSON object
        sampling = _json_object(str(parameters["sampling_parameters"]), "sampling_parameters")
        fields.update((key, value) for key, value in sampling.items() if key in TEXT_SETTINGS)
    for name, tensor in tensors.items():
        if name == TEXT_INPUT:
            continue
        if name not in TEXT_SETTINGS:
            raise APIError(
                400, f"input {name} is not accepted; the settings are {sorted(TEXT_SETTINGS)}", name
            )
        fields[name] = tensor.texts() if name == "stop" else tensor.single()
    return TextJob(_validated(CompletionRequest, {**fields, "prompt": tensors[TEXT_INPUT].text()}, ""))


def _json_object(text: str, name: str) -> dict[str, Any]:
    try:
        fields = parse_json(text)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"{name} is not valid JSON: {exc}", name) from None
    if not isinstance(fields, dict):
        raise APIError(400, f"{name} must hold a JSON object, not {type(fields).__name__}", name)
    return fields


def _validated(model: type[Body], fields: dict[str, Any], prefix: str) -> Body:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise APIError(400, prefix + message, param) from None
