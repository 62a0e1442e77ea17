"""Random PEFT adapters shaped for a model, for benchmarks (`bench --lora-rank R --num-loras N`): what
the GPU pays for serving adapters does not depend on what they learned."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tokenmill.lora.adapter import CONFIG_FILE, TARGET_MODULES, WEIGHTS_FILE, LoRARequest
from tokenmill.models.config import ModelConfig


def projection_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection a LoRA adapter may target."""
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    hidden, inter = config.hidden_size, config.intermediate_size
    return {
        "q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
        "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden),
    }  # fmt: skip


def write_random_adapters(
    config: ModelConfig, directory: Path, count: int, rank: int, seed: int = 0, b_std: float = 0.01
) -> list[LoRARequest]:
    """`count` rank-`rank` adapters on all seven projections, in `directory`/lora<i>. B's entries have
    standard deviation `b_std`: small for benchmarks, large enough to change greedy answers for checks."""
    generator = torch.Generator().manual_seed(seed)
    requests = []
    for index in range(count):
        path = directory / f"lora{index}"
        path.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for layer in range(config.num_hidden_layers):
            for module, (fan_in, fan_out) in projection_shapes(config).items():
                group = TARGET_MODULES[module][0].split(".")[0]
                prefix = f"base_model.model.model.layers.{layer}.{group}.{module}"
                a = torch.randn(rank, fan_in, generator=generator) / fan_in**0.5
                b = torch.randn(fan_out, rank, generator=generator) * b_std
                tensors[f"{prefix}.lora_A.weight"] = a.to(torch.bfloat16)
                tensors[f"{prefix}.lora_B.weight"] = b.to(torch.bfloat16)
        save_file(tensors, str(path / WEIGHTS_FILE))
        content = {
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": 2 * rank,
            "target_modules": list(TARGET_MODULES),
        }
        (path / CONFIG_FILE).write_text(json.dumps(content))
        requests.append(LoRARequest(f"lora{index}", str(path)))
    return requests
