"""The few facts about a decoder-only model that the engine needs, from whatever format it came in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenmill.distributed.group import SINGLE_RANK, TensorParallel
from tokenmill.quantization.config import QuantizationConfig


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    qk_norm: bool = False
    rope_scaling: dict[str, Any] | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    torch_dtype: str | None = None
    quantization: QuantizationConfig | None = None  # set by the loader
    tensor_parallel: TensorParallel = SINGLE_RANK  # this rank's group, set by the loader

    @classmethod
    def from_hf(cls, config: dict[str, Any], generation_config: dict[str, Any] | None = None) -> ModelConfig:
        """Read a transformers `config.json` (v4 or v5 layout) plus `generation_config.json`."""
        architectures = config.get("architectures") or []
        if not architectures:
            raise ValueError("config.json has no 'architectures' entry")
        architecture = architectures[0]
        heads = config["num_attention_heads"]
        rope = dict(config.get("rope_parameters") or {})
        legacy_scaling = config.get("rope_scaling") or {}
        rope_theta = rope.pop("rope_theta", config.get("rope_theta", 10000.0))
        scaling = {**legacy_scaling, **rope}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        eos = _as_ids((generation_config or {}).get("eos_token_id")) or _as_ids(config.get("eos_token_id"))
        return cls(
            architecture=architecture,
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            max_position_embeddings=config.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
            rope_scaling=None if rope_type == "default" else {**scaling, "rope_type": rope_type},
            eos_token_ids=eos,
            torch_dtype=config.get("torch_dtype") or config.get("dtype"),
        )


def _as_ids(value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, int) else tuple(value)
