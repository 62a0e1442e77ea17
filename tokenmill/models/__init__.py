"""Model families, and the table that maps a checkpoint's architecture name to one."""

from __future__ import annotations

from tokenmill.models.config import ModelConfig
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.qwen2 import Qwen2ForCausalLM
from tokenmill.models.qwen3 import Qwen3ForCausalLM

MODEL_REGISTRY: dict[str, type[LlamaForCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
    "Qwen3ForCausalLM": Qwen3ForCausalLM,
}


def model_class(config: ModelConfig) -> type[LlamaForCausalLM]:
    try:
        return MODEL_REGISTRY[config.architecture]
    except KeyError:
        supported = ", ".join(sorted(MODEL_REGISTRY))
        raise ValueError(
            f"architecture {config.architecture!r} is not supported (supported: {supported})"
        ) from None


__all__ = ["MODEL_REGISTRY", "ModelConfig", "model_class"]
