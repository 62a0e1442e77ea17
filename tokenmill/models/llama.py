"""Llama-family decoder (Llama 2/3, SmolLM2). Qwen2 and Qwen3 reuse it with their own options."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tokenmill.distributed.sharding import checkpoint_part
from tokenmill.distributed.vocab import embedding, lm_head
from tokenmill.kernels.lora_mapping import LoRAExpand
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import Ops
from tokenmill.models import small_batch
from tokenmill.models.config import ModelConfig
from tokenmill.models.layers import MLP, Attention, RMSNorm, RotaryTables, takes_fp8_rows
from tokenmill.quantization import QuantLinear
from tokenmill.quantization.base import copy_checked

# checkpoint name fragment -> (fused parameter fragment, shard index)
_FUSED_SHARDS = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class DecoderLayer(nn.Module):
    """Pre-norm block. The residual stream is carried separately so each norm can fuse the add, and so
    is the pending LoRA expand of the projection that wrote the layer's output: the next norm adds it."""

    def __init__(self, config: ModelConfig, rotary: RotaryTables, ops: Ops, prefix: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.self_attn = Attention(config, rotary, ops, f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.mlp = MLP(config, ops, f"{prefix}.mlp")
        self.ops = ops

    def forward(
        self,
        positions: torch.Tensor,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        meta: AttentionMetadata,
        lora: LoRAExpand | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, LoRAExpand | None]:
        """(hidden, residual, hidden's pending LoRA expand) -> the same after this layer; the fused
        small-batch path returns the stream alone, (stream, None, None), which the next norm reads the
        same way."""
        fused = self.ops.small_batch
        if fused is not None and small_batch.takes(fused, self, hidden.shape[0]):
            if lora is not None:  # the layer before ran unfused: its down projection's delta is still to add
                lora.add_to(hidden, self.ops.lora_expand)
            return (*small_batch.forward(fused, self, positions, hidden, residual, meta), None)
        tokens = hidden.shape[0]  # each norm writes its projection's input as that projection takes it
        to_qkv, to_gate_up = (
            takes_fp8_rows(p, tokens) for p in (self.self_attn.qkv_proj, self.mlp.gate_up_proj)
        )
        if residual is None:  # the embeddings, or a fused layer's stream: nothing pending
            assert lora is None
            residual, (normed, _) = hidden, self.input_layernorm(hidden, quantize=to_qkv)
        else:
            normed, residual = self.input_layernorm(hidden, residual, lora, to_qkv)
        hidden, lora = self.self_attn(positions, normed, meta)
        normed, residual = self.post_attention_layernorm(hidden, residual, lora, to_gate_up)
        assert residual is not None
        hidden, lora = self.mlp(normed)
        return hidden, residual, lora


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
        self.embed_tokens = embedding(config)
        self.layers = nn.ModuleList(
            DecoderLayer(config, rotary, ops, f"model.layers.{i}") for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.lm_head = lm_head(config)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.ops = ops

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        hidden, residual, lora = self.embed_tokens(input_ids), None, None
        for layer in self.layers:
            hidden, residual, lora = layer(positions, hidden, residual, meta, lora)
        return self.norm(hidden, residual, lora)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Logits in the model dtype: greedy argmax needs no float32 copy of [batch, vocab]. Under
        tensor parallelism, rank 0 gets them and the other ranks None."""
        if self._head_is_gemv(hidden):
            return self.ops.small_batch.linear(hidden, self.lm_head.weight, None, None)
        return self.lm_head(hidden)

    def warm_up_logits(self, hidden: torch.Tensor) -> None:
        """Compile the small-batch LM head for the width of `hidden` now, at start-up: it runs outside the
        decode graphs, and a server's first few-sequence step may be the tail of the judged batch. Nothing
        to do for wider batches or other heads (a tensor-parallel one would gather)."""
        if self._head_is_gemv(hidden):
            self.compute_logits(hidden)

    def _head_is_gemv(self, hidden: torch.Tensor) -> bool:
        fused = self.ops.small_batch
        return fused is not None and small_batch.head_takes(fused, self.lm_head, hidden.shape[0])

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.layers]

    def local_heads(self) -> tuple[int, int]:
        """(query heads, KV heads) this rank computes and caches: all of them on a single rank."""
        attention = self.layers[0].self_attn
        return attention.num_heads, attention.num_kv_heads

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (Hugging Face names) into the model; every one must be set. Tensors of
        a projection go to its `QuantLinear`, which stores them however its quantization method says.
        Under tensor parallelism each module keeps its rank's part of a tensor (which may be a lazy
        safetensors slice, so only that part is read)."""
        params = dict(self.named_parameters())
        modules = dict(self.named_modules())
        linears = {name: m for name, m in self.named_modules() if isinstance(m, QuantLinear)}
        unset = {key for name, linear in linears.items() for key in _linear_keys(name, linear)}
        unset |= {
            key for name in params if name.rpartition(".")[0] not in linears for key in self._load_keys(name)
        }
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if "rotary_emb" in name or (name == "lm_head.weight" and self.config.tie_word_embeddings):
                continue
            target, shard = name, None
            for fragment, (fused, index) in _FUSED_SHARDS.items():
                if f".{fragment}." in name:
                    target, shard = name.replace(fragment, fused), index
                    break
            module, _, tensor_name = target.rpartition(".")
            if module in linears and tensor_name in linears[module].tensor_names():
                try:
                    linears[module].load(tensor_name, tensor, shard)
                except ValueError as exc:
                    raise ValueError(f"checkpoint tensor {name!r}: {exc}") from exc
            elif target in params and module not in linears:
                copy_checked(params[target].data, checkpoint_part(modules[module], tensor), name)
            else:
                raise ValueError(f"checkpoint tensor {name!r} has no place in {type(self).__name__}")
            unset.discard(target if shard is None else f"{target}#{shard}")
        if unset:
            raise ValueError(f"checkpoint is missing {len(unset)} tensors, e.g. {sorted(unset)[:3]}")

    def _load_keys(self, name: str) -> list[str]:
        """What must be loaded for parameter `name` outside the projections: nothing for a tied head."""
        if name == "lm_head.weight" and self.config.tie_word_embeddings:
            return []
        return [name]


def _linear_keys(name: str, linear: QuantLinear) -> list[str]:
    """One key per checkpoint tensor of each fused shard, e.g. `...qkv_proj.weight#2`."""
    shards = len(linear.out_shards)
    return [
        f"{name}.{tensor}" if shards == 1 else f"{name}.{tensor}#{i}"
        for tensor in linear.tensor_names()
        for i in range(shards)
    ]
