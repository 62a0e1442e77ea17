"""What one device holds: its part of the model, the KV-cache plan every rank agreed on, its runner.

The engine process (rank 0) and each tensor-parallel worker build theirs here, the same way and in
the same order, so the collectives of start-up (KV-cache size, CUDA graph capture) line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.group import SINGLE_RANK, TensorParallel
from tokenmill.engine.kv_cache_sizing import KVCachePlan, plan_kv_cache
from tokenmill.engine.model_runner import ModelRunner, StepPeers
from tokenmill.engine.sampler import Sampler
from tokenmill.kernels.ops import Ops, select_ops
from tokenmill.models.loader import LoadedModel, load_model


@dataclass
class RankModel:
    config: EngineConfig
    loaded: LoadedModel
    ops: Ops
    dtype: torch.dtype
    kv: KVCachePlan
    max_num_batched_tokens: int

    def runner(self, sampler: Sampler | None, peers: StepPeers | None = None) -> ModelRunner:
        """The model runner over this rank's KV cache (captures CUDA graphs unless eager)."""
        config = self.config
        return ModelRunner(
            self.loaded.model,
            config.block_size,
            self.kv.num_blocks,
            sampler,
            self.ops,
            self.kv.dtype,
            config.max_num_seqs,
            self.kv.max_model_len,
            cuda_graphs=self.ops.supports_cuda_graphs and not config.enforce_eager,
            peers=peers,
        )


def load_rank_model(
    config: EngineConfig, device: torch.device, tp: TensorParallel = SINGLE_RANK
) -> RankModel:
    dtype = config.resolved_dtype(device)
    ops = select_ops(config.kernels, device)
    loaded = load_model(
        config.model, device, dtype, config.max_model_len, config.seed, ops, config.quantization, tp
    )
    default_budget = 8192 if device.type == "cuda" else 2048
    budget = config.max_num_batched_tokens or max(default_budget, config.max_num_seqs)
    model_len = config.max_model_len or loaded.config.max_position_embeddings
    kv = plan_kv_cache(config, loaded.model, model_len, budget, dtype)
    return RankModel(config, loaded, ops, dtype, kv, budget)
