"""GGUF checkpoints (llama.cpp's format): metadata to `ModelConfig`, quantized tensors to float weights."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tokenmill.models.config import ModelConfig
from tokenmill.models.gguf_dequant import dequantize
from tokenmill.models.gguf_reader import GGUFError, GGUFFile

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

# GGUF tensor name -> Hugging Face name ({n} is the layer index)
_TENSOR_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{n}.attn_norm.weight": "layers.{n}.input_layernorm.weight",
    "blk.{n}.ffn_norm.weight": "layers.{n}.post_attention_layernorm.weight",
    "blk.{n}.attn_q.weight": "layers.{n}.self_attn.q_proj.weight",
    "blk.{n}.attn_k.weight": "layers.{n}.self_attn.k_proj.weight",
    "blk.{n}.attn_v.weight": "layers.{n}.self_attn.v_proj.weight",
    "blk.{n}.attn_q.bias": "layers.{n}.self_attn.q_proj.bias",
    "blk.{n}.attn_k.bias": "layers.{n}.self_attn.k_proj.bias",
    "blk.{n}.attn_v.bias": "layers.{n}.self_attn.v_proj.bias",
    "blk.{n}.attn_output.weight": "layers.{n}.self_attn.o_proj.weight",
    "blk.{n}.attn_q_norm.weight": "layers.{n}.self_attn.q_norm.weight",
    "blk.{n}.attn_k_norm.weight": "layers.{n}.self_attn.k_norm.weight",
    "blk.{n}.ffn_gate.weight": "layers.{n}.mlp.gate_proj.weight",
    "blk.{n}.ffn_up.weight": "layers.{n}.mlp.up_proj.weight",
    "blk.{n}.ffn_down.weight": "layers.{n}.mlp.down_proj.weight",
}


class GGUFCheckpoint:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = GGUFFile(self.path)
        self.arch = str(self.required("general.architecture"))
        if self.arch not in _ARCHITECTURES:
            raise ValueError(
                f"GGUF architecture {self.arch!r} is not supported (supported: {sorted(_ARCHITECTURES)})"
            )

    def metadata(self, key: str, default: Any = None) -> Any:
        return self.file.metadata.get(key, default)

    def required(self, key: str) -> Any:
        value = self.file.metadata.get(key)
        if value is None:
            raise GGUFError(f"{self.path}: the metadata has no {key!r}")
        return value

    def model_config(self) -> ModelConfig:
        arch = self.arch
        heads = self.required(f"{arch}.attention.head_count")
        hidden = self.required(f"{arch}.embedding_length")
        tensor_names = {t.name for t in self.file.tensors}
        eos = self.metadata("tokenizer.ggml.eos_token_id")
        return ModelConfig(
            architecture=_ARCHITECTURES[arch],
            vocab_size=self.metadata(f"{arch}.vocab_size") or len(self.required("tokenizer.ggml.tokens")),
            hidden_size=hidden,
            intermediate_size=self.required(f"{arch}.feed_forward_length"),
            num_hidden_layers=self.required(f"{arch}.block_count"),
            num_attention_heads=heads,
            num_key_value_heads=self.metadata(f"{arch}.attention.head_count_kv", heads),
            head_dim=self.metadata(f"{arch}.attention.key_length", hidden // heads),
            rms_norm_eps=self.metadata(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6),
            rope_theta=self.metadata(f"{arch}.rope.freq_base", 10000.0),
            max_position_embeddings=self.metadata(f"{arch}.context_length", 4096),
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            eos_token_ids=() if eos is None else (eos,),
        )

    def weights(self, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
        """Dequantized tensors under Hugging Face names, with llama.cpp's q/k row permutation undone."""
        for tensor in self.file.tensors:
            name = _hf_name(tensor.name)
            weight = dequantize(self.file.tensor_bytes(tensor), tensor.ggml_type, tensor.shape)
            if self.arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
                heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
                weight = _unpermute_rotary_rows(weight, heads)
            yield name, weight


def _hf_name(gguf_name: str) -> str:
    match = re.match(r"blk\.(\d+)\.(.+)", gguf_name)
    key, layer = (f"blk.{{n}}.{match.group(2)}", match.group(1)) if match else (gguf_name, "")
    if key not in _TENSOR_NAMES:
        raise ValueError(f"GGUF tensor {gguf_name!r} is not understood")
    return _TENSOR_NAMES[key].format(n=layer)


def _unpermute_rotary_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp interleaves each head's rotary halves; put them back in the half-split order."""
    rows = weight.shape[0]
    return weight.reshape(num_heads, rows // num_heads // 2, 2, -1).transpose(1, 2).reshape(weight.shape)
