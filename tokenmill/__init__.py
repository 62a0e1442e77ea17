"""tokenmill: a high-throughput LLM inference engine and server."""

from tokenmill.engine.llm import LLM
from tokenmill.lora.adapter import LoRARequest
from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.sampling_params import SamplingParams

__version__ = "0.1.0"
__all__ = ["LLM", "CompletionOutput", "LoRARequest", "RequestOutput", "SamplingParams", "__version__"]
