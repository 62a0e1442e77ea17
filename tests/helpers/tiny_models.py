"""Tiny random Hugging Face checkpoints (safetensors + tokenizer), written by transformers itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

_COMMON = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.2,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

ARCHITECTURES = ["llama", "llama3-tied", "qwen2", "qwen3"]


def tiny_config(arch: str) -> PretrainedConfig:
    # Imported here, not at module level: tests/conftest.py imports this module, and importing
    # transformers' model configs costs every pytest run seconds of collection before any test needs one.
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    if arch == "llama":
        return LlamaConfig(**_COMMON, tie_word_embeddings=False)
    if arch == "llama3-tied":
        scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        return LlamaConfig(**_COMMON, tie_word_embeddings=True, rope_scaling=scaling, rope_theta=5000.0)
    if arch == "qwen2":
        return Qwen2Config(**_COMMON, tie_word_embeddings=False)
    if arch == "qwen3":
        return Qwen3Config(**_COMMON, head_dim=32, tie_word_embeddings=True)
    raise ValueError(arch)


def save_tiny_model(arch: str, directory: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    from tokenmill.tokenizer import build_byte_level_tokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    model.save_pretrained(directory, safe_serialization=True)
    build_byte_level_tokenizer().save_pretrained(directory)
    return directory
