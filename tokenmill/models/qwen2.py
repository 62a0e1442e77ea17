"""Qwen2 / Qwen2.5: the Llama layout with a bias on the q, k and v projections."""

from __future__ import annotations

from dataclasses import replace

from tokenmill.models.config import ModelConfig
from tokenmill.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def adapt_config(config: ModelConfig) -> ModelConfig:
        return replace(config, attention_bias=True)
