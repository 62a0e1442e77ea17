"""Qwen3 (dense): the Llama layout with an RMSNorm over each head of q and k before the rotary embedding."""

from __future__ import annotations

from dataclasses import replace

from tokenmill.models.config import ModelConfig
from tokenmill.models.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def adapt_config(config: ModelConfig) -> ModelConfig:
        return replace(config, qk_norm=True)
