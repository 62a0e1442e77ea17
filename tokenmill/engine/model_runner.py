"""Owns the model and its KV cache on the device; turns a scheduled batch into sampled tokens."""

from __future__ import annotations

import logging

import torch

from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.kernels.attention import AttentionMetadata
from tokenmill.models.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)

GiB = 1 << 30


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        block_size: int,
        num_blocks: int,
        sampler: Sampler,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.sampler = sampler
        params = next(model.parameters())
        self.device, self.dtype = params.device, params.dtype
        cfg = model.config
        shape = (2, num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim)
        self.kv_caches = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in model.layers]
        for attention, cache in zip(model.attention_layers(), self.kv_caches):
            attention.kv_cache = cache

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> dict[int, int]:
        """Run one step; returns the sampled token of each sequence whose known tokens are now all computed.

        Sequences that asked for logprobs get them appended (log-softmax of the raw logits)."""
        input_ids, positions, meta, logit_rows, sampling_seqs = self._prepare(batch)
        hidden = self.model(input_ids, positions, meta)
        if not sampling_seqs:
            return {}
        logits = self.model.compute_logits(hidden[logit_rows])
        sampled = self.sampler(logits, sampling_seqs)
        tokens = sampled.tolist()
        wanting = [row for row, seq in enumerate(sampling_seqs) if seq.logprobs is not None]
        if wanting:
            _record_logprobs(logits, sampled, wanting, sampling_seqs)
        return {seq.seq_id: token for seq, token in zip(sampling_seqs, tokens)}

    def _prepare(
        self, batch: ScheduledBatch
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor, list[Sequence]]:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        seq_lens: list[int] = []
        query_starts = [0]
        logit_rows: list[int] = []
        sampling_seqs: list[Sequence] = []
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + num_new
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            table = seq.block_ids
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            seq_lens.append(end)
            query_starts.append(query_starts[-1] + num_new)
            if end == seq.num_tokens:
                logit_rows.append(query_starts[-1] - 1)
                sampling_seqs.append(seq)
        width = max(len(seq.block_ids) for seq in batch.seqs)
        tables = [seq.block_ids + [0] * (width - len(seq.block_ids)) for seq in batch.seqs]

        def to_device(values: list[int] | list[list[int]], dtype: torch.dtype) -> torch.Tensor:
            tensor = torch.tensor(values, dtype=dtype)
            if self.device.type == "cuda":
                return tensor.pin_memory().to(self.device, non_blocking=True)
            return tensor

        meta = AttentionMetadata(
            slot_mapping=to_device(slots, torch.long),
            block_tables=to_device(tables, torch.int32),
            seq_lens=to_device(seq_lens, torch.int32),
            query_start_loc=to_device(query_starts, torch.int32),
            num_decodes=batch.num_decodes,
            seq_lens_cpu=seq_lens,
            query_lens_cpu=batch.num_new_tokens,
            block_size=bs,
        )
        return (
            to_device(input_ids, torch.long),
            to_device(positions, torch.long),
            meta,
            to_device(logit_rows, torch.long),
            sampling_seqs,
        )


def _record_logprobs(
    logits: torch.Tensor, sampled: torch.Tensor, rows: list[int], seqs: list[Sequence]
) -> None:
    index = torch.tensor(rows, device=logits.device)
    logprobs = logits[index].log_softmax(dim=-1)
    chosen = logprobs.gather(-1, sampled[index][:, None])[:, 0].tolist()
    top_n = max(seqs[row].params.logprobs or 0 for row in rows)
    top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n else (logprobs[:, :0], logprobs[:, :0])
    top_values, top_ids = top_values.tolist(), top_ids.long().tolist()
    sampled_ids = sampled[index].tolist()
    for i, row in enumerate(rows):
        seq = seqs[row]
        n = seq.params.logprobs or 0
        entry = dict(zip(top_ids[i][:n], top_values[i][:n]))
        entry[sampled_ids[i]] = chosen[i]
        assert seq.logprobs is not None
        seq.logprobs.append(entry)


def kv_bytes_per_block(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    cfg = model.config
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * block_size * cfg.num_key_value_heads * cfg.head_dim * element


def activation_reserve_bytes(model: LlamaForCausalLM, max_batched_tokens: int, max_num_seqs: int) -> int:
    """Generous upper bound of one step's transient memory: per-token activations plus fp32 logits."""
    cfg = model.config
    element = next(model.parameters()).element_size()
    per_token = (6 * cfg.hidden_size + 3 * cfg.intermediate_size) * element
    per_token += 3 * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim * element
    return max_batched_tokens * per_token + 4 * max_num_seqs * cfg.vocab_size * 4


def cuda_kv_budget_bytes(model: LlamaForCausalLM, memory_utilization: float, reserve: int) -> int:
    """What the KV cache may take so this process stays within `memory_utilization` of the device."""
    device = next(model.parameters()).device
    free, total = torch.cuda.mem_get_info(device)
    budget = int(total * memory_utilization) - (total - free) - reserve
    if budget <= 0:
        raise RuntimeError(
            f"no GPU memory left for the KV cache: {free / GiB:.1f} GiB free of {total / GiB:.1f} GiB, "
            f"gpu_memory_utilization={memory_utilization}; raise it or load a smaller model"
        )
    return budget
