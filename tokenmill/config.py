"""The engine's settings: one validated object shared by the offline API, the CLI and the server."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(BaseModel):
    """Knobs of the inference engine (names follow vLLM's `LLM` arguments)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | None = Field(
        default=None, description="HF directory, .gguf file or random:<preset>; None = embedded default"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Dtype = "auto"
    max_num_seqs: int = Field(default=256, ge=1, description="most sequences decoded together")
    max_model_len: int | None = Field(default=None, ge=2, description="prompt + output limit in tokens")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="token budget of one step")
    block_size: int = Field(default=16, ge=1, le=1024, description="tokens per KV-cache block")
    num_kv_blocks: int | None = Field(default=None, ge=1, description="fixes the KV cache size")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    cpu_kv_cache_gib: float = Field(default=2.0, gt=0, description="KV cache budget on CPU")
    enable_prefix_caching: bool = True
    seed: int = 0

    @field_validator("model")
    @classmethod
    def _empty_model_is_default(cls, value: str | None) -> str | None:
        return value or None

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but no CUDA device is available")
        return torch.device(self.device)

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return torch.bfloat16 if device.type == "cuda" else torch.float32
