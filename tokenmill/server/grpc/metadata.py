"""What the served model looks like to Open Inference Protocol clients: its metadata and its Triton
configuration (decoupled, so that clients know it answers a streamed request many times)."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

import tokenmill
from tokenmill.server.grpc.jobs import (
    FASTDEPLOY_INPUT,
    FASTDEPLOY_OUTPUT,
    MODEL_VERSION,
    TEXT_INPUT,
    TEXT_OUTPUT,
    TEXT_SETTINGS,
)

PLATFORM = "tokenmill"
EXTENSIONS = ["model_configuration", "parameters"]

# name -> (datatype, shape); every input is optional: a request has IN, or text_input and settings
_INPUTS = {
    FASTDEPLOY_INPUT: ("BYTES", [1]),
    TEXT_INPUT: ("BYTES", [1]),
    **{name: (datatype, [-1] if name == "stop" else [1]) for name, datatype in TEXT_SETTINGS.items()},
}
_OUTPUTS = {FASTDEPLOY_OUTPUT: ("BYTES", [1]), TEXT_OUTPUT: ("BYTES", [1])}


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name="tokenmill", version=tokenmill.__version__, extensions=EXTENSIONS)


def model_metadata(model_name: str) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model_name,
        versions=[MODEL_VERSION],
        platform=PLATFORM,
        inputs=[tensor(name=n, datatype=d, shape=s) for n, (d, s) in _INPUTS.items()],
        outputs=[tensor(name=n, datatype=d, shape=s) for n, (d, s) in _OUTPUTS.items()],
    )


def model_config(model_name: str) -> pb.ModelConfigResponse:
    config = mc.ModelConfig(
        name=model_name,
        platform=PLATFORM,
        backend=PLATFORM,
        max_batch_size=0,
        input=[
            mc.ModelInput(name=n, data_type=_config_type(d), dims=s, optional=True)
            for n, (d, s) in _INPUTS.items()
        ],
        output=[mc.ModelOutput(name=n, data_type=_config_type(d), dims=s) for n, (d, s) in _OUTPUTS.items()],
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True),
    )
    return pb.ModelConfigResponse(config=config)


def _config_type(datatype: str) -> int:
    """Triton's configuration spells BYTES as TYPE_STRING and every other datatype as TYPE_<name>."""
    return mc.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")
