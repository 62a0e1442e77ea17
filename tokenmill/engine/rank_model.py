"""What one device holds: its part of the model, the KV-cache plan every rank agreed on, its runner.

The engine process (rank 0) and each tensor-parallel worker build theirs here, the same way and in
the same order (load, warm the collectives up, plan the KV cache, build the runner), so the
collectives of start-up (warm-up, KV-cache size, CUDA graph capture) line up. Whatever else the
device must hold is allocated between loading and planning, so the KV cache takes only what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.group import SINGLE_RANK, TensorParallel
from tokenmill.engine.cuda_graphs import GRAPH_BATCH_SIZES, DecodeGraphs, graph_sizes
from tokenmill.engine.kv_cache_sizing import KVCachePlan, plan_kv_cache
from tokenmill.engine.model_runner import ModelRunner, StepPeers
from tokenmill.engine.prefill_graphs import PrefillGraphs
from tokenmill.engine.sampler import Sampler
from tokenmill.kernels.ops import Ops, select_ops
from tokenmill.lora.layers import LoRAModel, LoRAStep
from tokenmill.models.loader import LoadedModel, load_model
from tokenmill.spec_decode.verify_graphs import VerifyGraphs


@dataclass
class RankModel:
    config: EngineConfig
    loaded: LoadedModel
    ops: Ops
    dtype: torch.dtype
    max_num_batched_tokens: int

    def lora_layers(self) -> LoRAModel:
        """LoRA wrappers around this rank's projections (before the KV cache takes the memory left);
        their mapping buffers hold a whole step, or the largest decode graph's padded batch."""
        config = self.config
        max_tokens = max(self.max_num_batched_tokens, min(config.max_num_seqs, max(GRAPH_BATCH_SIZES)))
        model = self.loaded.model
        return LoRAModel(model, config.max_loras, config.max_lora_rank, max_tokens, self.ops)

    def plan_kv_cache(self) -> KVCachePlan:
        """The KV cache that fits now, the same on every rank (a collective under tensor parallelism)."""
        model_len = self.config.max_model_len or self.loaded.config.max_position_embeddings
        return plan_kv_cache(
            self.config, self.loaded.model, model_len, self.max_num_batched_tokens, self.dtype
        )

    def runner(
        self,
        kv: KVCachePlan,
        sampler: Sampler | None,
        peers: StepPeers | None = None,
        lora_step: LoRAStep | None = None,
    ) -> ModelRunner:
        """The model runner over this rank's KV cache (captures CUDA graphs unless eager)."""
        config = self.config
        verify_graphs = self.verify_graphs(kv.max_model_len)
        other_graphs = DecodeGraphs.made_in_process + len(graph_sizes(config.max_num_seqs))
        if verify_graphs is not None:
            other_graphs += verify_graphs.planned()
        return ModelRunner(
            self.loaded.model,
            config.block_size,
            kv.num_blocks,
            sampler,
            self.ops,
            kv.dtype,
            config.max_num_seqs,
            kv.max_model_len,
            cuda_graphs=self.ops.supports_cuda_graphs and not config.enforce_eager,
            peers=peers,
            lora_step=lora_step,
            verify_graphs=verify_graphs,
            prefill_graphs=PrefillGraphs(kv.max_model_len, self.max_num_batched_tokens, other_graphs),
        )

    def verify_graphs(self, max_model_len: int) -> VerifyGraphs | None:
        """Graphs of speculative decoding's verify steps, for every k and batch size that speculates."""
        config = self.config
        if config.speculative_method == "none":
            return None
        max_num_seqs = min(config.speculative_disable_batch_size, config.max_num_seqs)
        return VerifyGraphs(config.num_speculative_tokens, max_num_seqs, max_model_len)


def load_rank_model(
    config: EngineConfig, device: torch.device, tp: TensorParallel = SINGLE_RANK
) -> RankModel:
    dtype = config.resolved_dtype(device)
    ops = select_ops(config.kernels, device, config.small_batch_kernels)
    loaded = load_model(
        config.model, device, dtype, config.max_model_len, config.seed, ops, config.quantization, tp
    )
    tp.warm_up(device, dtype)
    default_budget = 8192 if device.type == "cuda" else 2048
    budget = config.max_num_batched_tokens or max(default_budget, config.max_num_seqs)
    return RankModel(config, loaded, ops, dtype, budget)
