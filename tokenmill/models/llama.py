"""Llama-family decoder (Llama 2/3, SmolLM2). Qwen2 and Qwen3 reuse it with their own options."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import Ops
from tokenmill.models.config import ModelConfig
from tokenmill.models.layers import MLP, Attention, RMSNorm, RotaryTables

# checkpoint name fragment -> (fused parameter fragment, shard index)
_FUSED_SHARDS = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class DecoderLayer(nn.Module):
    """Pre-norm block. The residual stream is carried separately so each norm can fuse the add."""

    def __init__(self, config: ModelConfig, rotary: RotaryTables, ops: Ops) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.self_attn = Attention(config, rotary, ops)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.mlp = MLP(config, ops)

    def forward(
        self,
        positions: torch.Tensor,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, (hidden, _) = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        assert residual is not None
        return self.mlp(hidden), residual


class LlamaForCausalLM(nn.Module):
    """Token ids of a flattened batch in, hidden states out; logits only for the rows asked for."""

    @staticmethod
    def adapt_config(config: ModelConfig) -> ModelConfig:
        """Family-specific options a generic config reader cannot know; Llama needs none."""
        return config

    def __init__(self, config: ModelConfig, max_positions: int, ops: Ops) -> None:
        super().__init__()
        self.config = config
        rotary = RotaryTables(config, max_positions)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, rotary, ops) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual, meta)
        return self.norm(hidden, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits in the model dtype: greedy argmax needs no float32 copy of [batch, vocab]."""
        return self.lm_head(hidden)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.layers]

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (Hugging Face names) into the fused parameters; every one must be set."""
        params = dict(self.named_parameters())
        unset = {key for name in params for key in self._load_keys(name)}
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if "rotary_emb" in name or (name == "lm_head.weight" and self.config.tie_word_embeddings):
                continue
            target, shard = name, None
            for fragment, (fused, index) in _FUSED_SHARDS.items():
                if f".{fragment}." in name:
                    target, shard = name.replace(fragment, fused), index
                    break
            if target not in params:
                raise ValueError(f"checkpoint tensor {name!r} has no place in {type(self).__name__}")
            rows = self._shard_rows(target, shard) if shard is not None else slice(None)
            destination = params[target].data[rows]
            if destination.shape != tensor.shape:
                raise ValueError(
                    f"{name}: checkpoint shape {tuple(tensor.shape)} != {tuple(destination.shape)}"
                )
            destination.copy_(tensor)
            unset.discard(target if shard is None else f"{target}#{shard}")
        if unset:
            raise ValueError(f"checkpoint is missing {len(unset)} tensors, e.g. {sorted(unset)[:3]}")

    def _load_keys(self, name: str) -> list[str]:
        """What must be loaded for parameter `name`: the name itself, or one key per fused shard."""
        if name == "lm_head.weight" and self.config.tie_word_embeddings:
            return []
        if "qkv_proj" in name:
            return [f"{name}#{i}" for i in range(3)]
        if "gate_up_proj" in name:
            return [f"{name}#{i}" for i in range(2)]
        return [name]

    def _shard_rows(self, fused_name: str, shard: int) -> slice:
        cfg = self.config
        if "qkv_proj" in fused_name:
            q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
            bounds = [0, q, q + kv, q + 2 * kv]
        else:
            bounds = [0, cfg.intermediate_size, 2 * cfg.intermediate_size]
        return slice(bounds[shard], bounds[shard + 1])
