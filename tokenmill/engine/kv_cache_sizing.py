"""How large the paged KV cache is: its element type, its number of blocks and the context it can hold.

The one place that turns memory (the device's free memory, or a CPU budget) into KV blocks, so the
engine core only asks for a plan and never does memory arithmetic itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from tokenmill.config import EngineConfig
from tokenmill.models.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)

GiB = 1 << 30
INT8_SCALE_BYTES = 4  # an int8 cache's float32 scale per token and head


@dataclass(frozen=True)
class KVCachePlan:
    dtype: torch.dtype
    num_blocks: int
    max_model_len: int  # the model's context, lowered if the cache cannot hold one full sequence


def plan_kv_cache(
    config: EngineConfig,
    model: LlamaForCausalLM,
    model_len: int,
    max_num_batched_tokens: int,
    model_dtype: torch.dtype,
) -> KVCachePlan:
    """`config.num_kv_blocks` if set, else as many blocks as memory allows (never more than
    `max_num_seqs` full-length sequences need); under tensor parallelism, the fewest any rank can hold,
    so one block table serves every rank."""
    device = next(model.parameters()).device
    dtype = kv_cache_dtype(config.kv_cache_dtype, device, model_dtype)
    num_blocks = config.num_kv_blocks or _blocks_from_memory(
        config, model, model_len, max_num_batched_tokens, dtype
    )
    num_blocks = model.config.tensor_parallel.minimum(num_blocks, device)
    max_model_len = min(model_len, num_blocks * config.block_size)
    if max_model_len < model_len:
        logger.warning("max_model_len lowered to %d tokens: the KV cache holds no more", max_model_len)
    return KVCachePlan(dtype, num_blocks, max_model_len)


def kv_cache_dtype(requested: str, device: torch.device, model_dtype: torch.dtype) -> torch.dtype:
    if requested == "auto":
        return model_dtype
    if requested == "int8":  # stored values are dequantized in registers: every GPU (and the CPU) reads it
        return torch.int8
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        raise ValueError(
            "kv_cache_dtype='fp8' needs a GPU with fp8 support (sm_89 or newer: Ada, Hopper, Blackwell)"
        )
    return torch.float8_e4m3fn


def _blocks_from_memory(
    config: EngineConfig,
    model: LlamaForCausalLM,
    model_len: int,
    max_num_batched_tokens: int,
    dtype: torch.dtype,
) -> int:
    per_block = kv_bytes_per_block(model, config.block_size, dtype)
    if next(model.parameters()).device.type == "cuda":
        reserve = activation_reserve_bytes(model, max_num_batched_tokens, config.max_num_seqs)
        budget = cuda_kv_budget_bytes(
            model, config.gpu_memory_utilization, reserve, config.max_gpu_memory_bytes()
        )
    else:
        budget = int(config.cpu_kv_cache_gib * GiB)
    useful = config.max_num_seqs * -(-model_len // config.block_size) + 1
    return max(1, min(budget // per_block, useful))


def kv_bytes_per_block(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    """Keys and values of every layer, plus an int8 cache's float32 scale per token and head."""
    cfg = model.config
    element = torch.empty((), dtype=dtype).element_size()
    _, kv_heads = model.local_heads()
    per_head = cfg.head_dim * element + (INT8_SCALE_BYTES if dtype == torch.int8 else 0)
    return 2 * cfg.num_hidden_layers * block_size * kv_heads * per_head


def allocate_kv_cache(
    shape: tuple[int, int, int, int, int], dtype: torch.dtype, num_layers: int, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Each layer's cache ([2, blocks, block_size, kv_heads, head_dim]) and the scales its quantized
    values need: fp8 one per tensor (1.0, shared by every layer); int8 one per token and head, computed as
    each token is written ([2, blocks, block_size, kv_heads] per layer); None in the model dtype."""
    caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
    if dtype == torch.float8_e4m3fn:
        shared = torch.ones(2, dtype=torch.float32, device=device)
        return caches, [shared] * num_layers
    if dtype == torch.int8:
        return caches, [torch.zeros(shape[:-1], dtype=torch.float32, device=device) for _ in caches]
    return caches, [None] * num_layers


def activation_reserve_bytes(model: LlamaForCausalLM, max_batched_tokens: int, max_num_seqs: int) -> int:
    """Generous upper bound of one step's transient memory: per-token activations plus fp32 logits."""
    cfg = model.config
    element = next(model.parameters()).element_size()
    per_token = (6 * cfg.hidden_size + 3 * cfg.intermediate_size) * element
    per_token += 3 * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim * element
    graphs_and_workspace = GiB // 2
    return max_batched_tokens * per_token + 4 * max_num_seqs * cfg.vocab_size * 4 + graphs_and_workspace


def cuda_kv_budget_bytes(
    model: LlamaForCausalLM, memory_utilization: float, reserve: int, cap: int | None = None
) -> int:
    """What the KV cache may take so the device stays within `memory_utilization`, and this process
    within `cap` bytes (e.g. to emulate a 32 GB card on a larger one)."""
    device = next(model.parameters()).device
    free, total = torch.cuda.mem_get_info(device)
    budget = int(total * memory_utilization) - (total - free) - reserve
    if cap is not None:
        budget = min(budget, cap - torch.cuda.memory_reserved(device) - reserve)
    if budget <= 0:
        raise RuntimeError(
            f"no GPU memory left for the KV cache: {free / GiB:.1f} GiB free of {total / GiB:.1f} GiB, "
            f"gpu_memory_utilization={memory_utilization}; raise it or load a smaller model"
        )
    return budget
